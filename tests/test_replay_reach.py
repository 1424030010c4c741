"""The replay's shortcut (``_replay._Reach``) is exact: skipping the programs that cannot reach a
patch call changes no finding.

Every project under ``fixtures/precision`` and ``fixtures/examples``, and the standard
library's own ``json``, ``email`` and ``asyncio`` packages (import cycles, packages, lazy
imports), are checked twice: as shipped, and with the shortcut switched off so that every
program is replayed in full. The findings must be the same, and on the standard library the
shortcut must actually have skipped replays.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import _replay, analyze

from .conftest import FIXTURES, isolated_copy

# The projects with several programs and import graphs (the runtime apps under fixtures/apps
# are one module each: they add time, not cases)
PROJECTS = sorted(
    p for group in ("precision", "examples") for p in (FIXTURES / group).iterdir() if p.is_dir()
)
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _findings(project: Path, framework: str | None = None) -> list[tuple]:
    overrides = {"framework": framework} if framework else None
    config = load_config([project], REGISTRY.keys(), overrides=overrides, config_file=None)
    # The session's cache spares parsing the installed modules again; the project stage (the
    # replay) runs every time, never reused from the stage cache.
    report, _ = analyze(
        [project], config, cwd=project, jobs=1, model_from_root=True, reuse_stage=False
    )
    assert not [e for e in report.errors if "internal error" in e], report.errors
    return [(f.rule, f.path, f.line, f.column, f.message) for f in report.findings]


def _without_shortcut(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Switch the shortcut off; returns the roots it would have skipped."""
    skipped: list[str] = []
    original = _replay._Reach.from_events

    def always(self: _replay._Reach, root: str, events: _replay.Events) -> bool:
        if not original(self, root, events):
            skipped.append(root)
        return True

    monkeypatch.setattr(_replay._Reach, "from_events", always)
    return skipped


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_findings_do_not_depend_on_the_shortcut(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = isolated_copy(project, tmp_path)
    fast = _findings(copy)
    _without_shortcut(monkeypatch)
    assert _findings(copy) == fast


def test_stdlib_packages_are_skipped_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "lib"
    for name in ("json", "email", "asyncio"):
        shutil.copytree(STDLIB / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    fast = _findings(tree, "gevent")
    skipped = _without_shortcut(monkeypatch)
    assert _findings(tree, "gevent") == fast
    assert "json.tool" in skipped  # a script whose imports never patch: not replayed
