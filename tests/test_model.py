"""The model layer: typed events, one place per event, runners declared by the rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from patchaudit.model.events import (
    EVENT_SCHEMA_VERSION,
    Event,
    ImportEvent,
    PatchEvent,
    TestBlockEvent,
    parse,
)
from patchaudit.model.facts import RuntimeContext
from patchaudit.model.machinery import IMPORTANT_PATCH_OPTIONS, is_machinery
from patchaudit.rules import REGISTRY, Runner


def test_the_event_schema_is_the_probes() -> None:
    from patchaudit.probe._machinery import EVENT_SCHEMA

    assert EVENT_SCHEMA_VERSION == EVENT_SCHEMA


def test_events_are_parsed_once_into_their_kind(tmp_path: Path) -> None:
    patch = parse({"event": "patch", "file": str(tmp_path / "app.py"), "line": 3, "kwargs": {}})
    assert isinstance(patch, PatchEvent) and patch.line == 3 and patch.kwargs == {}
    assert isinstance(parse({"event": "import", "module": "ssl"}), ImportEvent)
    unknown = parse({"event": "something-new", "x": 1})
    assert type(unknown) is Event and unknown.get("x") == 1  # new probe fields still readable


def test_every_event_says_where_it_happened_one_way(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    ctx = RuntimeContext.observe(
        [
            {"event": "patch", "file": str(app), "line": 7},
            {"event": "test_block", "test_file": str(app), "test_line": 12, "stack": []},
            {"event": "fork", "file": None, "line": None},
        ],
        app_roots=[tmp_path],
        cwd=tmp_path,
        mode="as-is",
        max_blocking=0.1,
        concurrency=1,
    )
    facts = ctx.facts
    assert facts.patches[0].location(facts) == ("app.py", 7)
    block = facts.first("test_block")
    assert isinstance(block, TestBlockEvent) and block.location(facts) == ("app.py", 12)
    assert facts.first("fork").location(facts) == ("<unknown>", 1)
    assert facts.first("fork").location(facts, default="<pytest>") == ("<pytest>", 1)
    assert facts.patch_place() == ("app.py", 7)


def test_rules_declare_their_runners() -> None:
    probe = {code for code, rule in REGISTRY.items() if rule.runs_in(Runner.PROBE)}
    pytest_ = {code for code, rule in REGISTRY.items() if rule.runs_in(Runner.PYTEST)}
    # read events only the pytest plugin records
    assert {"MPA153", "MPA314", "MPA315", "MPA853"} <= pytest_ - probe
    # read events only the probe records (serving, its own block reports)
    assert {"MPA851", "MPA852"} <= probe - pytest_
    assert {"MPA151", "MPA251", "MPA751"} <= probe & pytest_
    for rule in REGISTRY.values():
        assert rule.kind == (
            "runtime"
            if rule.runners & {Runner.PROBE, Runner.PYTEST}
            else next(iter(rule.runners)).value
        )


def test_machinery_and_patch_options_are_defined_once() -> None:
    assert "dns" in IMPORTANT_PATCH_OPTIONS
    assert is_machinery("gevent.monkey") and is_machinery("zope.interface")
    assert is_machinery("<patchaudit probe>")
    assert not is_machinery("geventwebsocket") and not is_machinery(None)


def test_test_code_is_decided_inside_the_project_not_by_where_it_sits(tmp_path: Path) -> None:
    """A project kept under a folder named tests/ is still application code: MPA403 fires in
    its app module, and not in its own test module."""
    project = tmp_path / "tests" / "chat"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[tool.patchaudit]\n")
    server = (
        "from gevent import monkey\nmonkey.patch_all()\nimport socketio\nsio = socketio.Server()\n"
    )
    (project / "app.py").write_text(server)
    (project / "tests" / "test_app.py").write_text(server)
    result = subprocess.run(
        [sys.executable, "-m", "patchaudit", "check", "--format", "concise", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    codes = [line.split()[1] + " " + line.split(":")[0] for line in result.stdout.splitlines()[:-1]]
    assert "MPA403 tests/chat/app.py" in codes
    assert not any(c.startswith("MPA403 tests/chat/tests/") for c in codes)
