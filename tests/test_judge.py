"""One judge for every surface: a runtime finding obeys the configuration like a static one."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from patchaudit._config import load_config
from patchaudit.judge import Judge, config_relative
from patchaudit.rules import REGISTRY, Hit
from patchaudit.runtime import AuditOptions, audit
from patchaudit.static import check

pytest.importorskip("gevent")

pytest_plugins = ["pytester"]

# `from time import sleep` before the patch: MPA201 statically, MPA251 at run time, same line.
_APP = """\
from time import sleep
from gevent import monkey
monkey.patch_all()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def _project(tmp_path: Path, ignores: list[str]) -> Path:
    project = tmp_path / "proj"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "wsgi.py").write_text(_APP)
    listed = ", ".join(f'"{code}"' for code in ignores)
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [tool.patchaudit]
            per-file-ignores = {{ "app/*" = [{listed}] }}
            """
        )
    )
    return project


def _found(tmp_path: Path, ignores: list[str], *, static: bool) -> set[tuple[str, str, int]]:
    project = _project(tmp_path, ignores)
    config = load_config([project], REGISTRY.keys())
    # The working directory is the project's parent: findings say `proj/app/wsgi.py`, while the
    # per-file-ignores glob is written relative to the config's root, `app/*`.
    options = AuditOptions(
        target="app.wsgi:application",
        mode="as-is",  # without the static check, "auto" would not know the target patches
        chdir=project,
        requests=2,
        concurrency=2,
        static=static,
    )
    result = audit(options, config, cwd=tmp_path, use_cache=False)
    assert result.report.errors == [], result.report.errors
    return {(f.rule, f.path, f.line) for f in result.report.findings}


@pytest.mark.parametrize("static", [True, False], ids=["with-static", "runtime-only"])
def test_per_file_ignores_apply_to_runtime_findings_relative_to_the_config_root(
    tmp_path: Path, static: bool
) -> None:
    place = ("MPA251", "proj/app/wsgi.py", 1)
    # Ignoring only the static code leaves the runtime one standing on its own.
    assert place in _found(tmp_path / "a", ["MPA201"], static=static)
    # Ignoring the runtime code drops it exactly as the static one is dropped.
    found = _found(tmp_path / "b", ["MPA201", "MPA251"], static=static)
    assert not {f for f in found if f[1] == "proj/app/wsgi.py" and f[0] in ("MPA201", "MPA251")}


def test_the_judge_maps_paths_to_the_config_root_for_every_caller(tmp_path: Path) -> None:
    project = _project(tmp_path, ["MPA251"])
    config = load_config([project], REGISTRY.keys())
    judge = Judge(config, tmp_path)
    assert config_relative("proj/app/wsgi.py", config.root, tmp_path) == "app/wsgi.py"
    assert config_relative("<pytest>", config.root, tmp_path) == "<pytest>"
    hit = Hit(line=1, column=1, path="proj/app/wsgi.py")
    assert judge.admit(REGISTRY["MPA251"], hit) is None
    assert judge.enabled("MPA151", "proj/app/wsgi.py")
    # The same hit seen from inside the project is judged the same way.
    inside = Judge(config, project)
    assert inside.admit(REGISTRY["MPA251"], Hit(line=1, column=1, path="app/wsgi.py")) is None


def test_a_noqa_that_silences_a_runtime_finding_is_in_use(tmp_path: Path) -> None:
    project = _project(tmp_path, [])
    wsgi = project / "app" / "wsgi.py"
    # MPA201 (static) and MPA251 (run time) both fire on line 1; the comment silences both.
    wsgi.write_text(
        _APP.replace("from time import sleep\n", "from time import sleep  # noqa: MPA201, MPA251\n")
    )
    config = load_config([project], REGISTRY.keys())
    options = AuditOptions(target="app.wsgi:application", chdir=project, requests=2, concurrency=2)
    report = audit(options, config, cwd=tmp_path, use_cache=False).report
    assert report.errors == [], report.errors
    found = {(f.rule, f.path, f.line) for f in report.findings}
    assert not {f for f in found if f[0] in ("MPA201", "MPA251", "MPA002")}, found
    # The static check alone still calls MPA251 unused: it cannot know about run time.
    static = check([project], config, cwd=tmp_path, use_cache=False)
    assert [(f.rule, f.line) for f in static.findings if f.rule == "MPA002"] == [("MPA002", 1)]


_PLUGIN_SUITE = """
import gevent


def test_blocking():
    from gevent.monkey import get_original

    gevent.sleep(0)
    get_original("time", "sleep")(0.5){noqa}
"""


@pytest.mark.parametrize("noqa", ["", "  # noqa: MPA851"], ids=["reported", "silenced"])
def test_the_pytest_plugin_honours_noqa_like_the_other_surfaces(
    pytester: pytest.Pytester, noqa: str
) -> None:
    pytester.makeconftest("from gevent import monkey\n\nmonkey.patch_all()\n")
    pytester.makepyfile(test_io=_PLUGIN_SUITE.format(noqa=noqa))
    pytester.runpytest_subprocess(
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:socket",
        "--gevent-audit",
        "--gevent-audit-threshold=0.2",
        "--gevent-audit-json=audit.json",
    )
    findings = json.loads((pytester.path / "audit.json").read_text())["findings"]
    blocked = [(f["path"], f["line"]) for f in findings if f["rule"] == "MPA851"]
    assert blocked == ([] if noqa else [("test_io.py", 8)])
