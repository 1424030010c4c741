"""The probe as a package: stdlib-only, small modules, one boot script, never shadowed.

The probe runs inside the audited process with the application's interpreter, so these are
properties of its source (checked on the AST) and of real runs in child interpreters.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from patchaudit import probe
from patchaudit._gevent_patches import PROBE_JOB
from patchaudit.runtime._launcher import PROBE_SCRIPT, run_probe

PACKAGE = Path(probe.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
#: Every top-level module the probe may import: the standard library ones it uses, and gevent
#: (with greenlet, whose switch hook times the hub once gevent has started it).
ALLOWED_IMPORTS = {
    "_signal",
    "_thread",
    "atexit",
    "gc",
    "importlib",
    "inspect",
    "json",
    "linecache",
    "os",
    "platform",
    "re",
    "sys",
    "time",
    "warnings",
    "gevent",
    # the --gunicorn-config job, a process of its own: GUNICORN_CMD_ARGS as gunicorn parses it
    "argparse",
    "shlex",
    "greenlet",
}
#: The one job that uses the app's gunicorn (when it is installed): its own Config is the truth.
JOB_IMPORTS = {"_gunicorn_config.py": {"gunicorn"}}
MACHINERY = {"gevent", "eventlet", "greenlet", "zope"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level absolute imports, names of relative imports) of one module."""
    absolute: set[str] = set()
    relative: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1, f"{path.name}: import from outside the package"
                if node.module:
                    relative.add(node.module.split(".")[0])
                else:
                    relative.update(alias.name for alias in node.names)
            else:
                absolute.add((node.module or "").split(".")[0])
    return absolute, relative


def test_the_probe_imports_only_the_stdlib_and_gevent() -> None:
    assert ALLOWED_IMPORTS <= set(sys.stdlib_module_names) | MACHINERY
    own = {path.stem for path in MODULES}
    used: set[str] = set()
    for path in MODULES:
        absolute, relative = _imports(path)
        assert "patchaudit" not in absolute, path.name
        extra = JOB_IMPORTS.get(path.name, set())
        assert absolute <= ALLOWED_IMPORTS | extra, (path.name, absolute - ALLOWED_IMPORTS)
        assert relative <= own, (path.name, relative - own)
        used |= absolute - extra
    assert used == ALLOWED_IMPORTS  # the list is exact: a new import is a decision


def test_modules_are_small_and_of_old_syntax() -> None:
    for path in MODULES:
        source = path.read_text(encoding="utf-8")
        assert source.count("\n") <= 400, f"{path.name}: {source.count(chr(10))} lines"
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, (ast.NamedExpr, ast.Match)), f"{path.name}:{node.lineno}"
    assert PROBE_SCRIPT == PACKAGE / "__main__.py"
    assert PROBE_SCRIPT.read_text(encoding="utf-8").count("\n") <= 60


def test_one_supervisor_loader() -> None:
    loaders = [p.name for p in MODULES if "PATCHAUDIT_SUPERVISE_SCRIPT" in p.read_text()]
    assert loaders == ["__main__.py"]


def _shadowing_modules(root: Path) -> None:
    """A module named like each of the probe's (and like its private name) that fails loudly."""
    for name in [p.stem for p in MODULES if p.stem != "__init__"] + ["_patchaudit_probe"]:
        (root / f"{name}.py").write_text(f"raise RuntimeError('shadowed: {name}')\n")
    (root / "_patchaudit_probe").mkdir()
    (root / "_patchaudit_probe" / "__init__.py").write_text("raise RuntimeError('shadowed')\n")


def test_app_modules_named_like_the_probes_do_not_shadow_it(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    _shadowing_modules(project)
    # ... and the other way round: the app's own module named like one of the probe's.
    (project / "_serving.py").write_text("OWN = True\n")
    (project / "app.py").write_text(
        textwrap.dedent(
            """
            from time import sleep
            import gevent.monkey
            gevent.monkey.patch_all()
            import _serving
            assert _serving.OWN

            def application(environ, start_response):
                start_response("200 OK", [])
                return [b"ok"]
            """
        ).lstrip()
    )
    spec = {
        "target": {"kind": "module", "module": "app", "file": None, "callable": None},
        "mode": "as-is",
        "chdir": str(project),
        "pythonpath": [str(project)],
        "serve": {"paths": ["/"], "requests": 2, "concurrency": 2, "request_timeout": 10},
        "app_roots": [str(project)],
    }
    run = run_probe(spec, python=sys.executable, timeout=60, workdir=tmp_path / "work")
    assert run.returncode == 0, run.stderr_summary.text()
    names = [e["event"] for e in run.events]
    assert names[0] == "start" and names[-1] == "done" and "error" not in names
    assert run.events[-1]["status"] == "ok"
    assert [e["statuses"] for e in run.all("serve")] == [{"200": 2}]
    (patch,) = run.all("patch")
    assert patch["file"] == str(project / "app.py") and patch["line"] == 3
    # None of the app's look-alikes was imported, and the probe's own modules are no holders.
    files = {
        e.get("file") for e in run.all("import") if str(e.get("file")).startswith(str(project))
    }
    assert files == {str(project / "app.py"), str(project / "_serving.py")}
    stale = {e["holder"] for e in run.all("stale")}
    assert "app" in stale and not [h for h in stale if h.startswith("_patchaudit")]
    start = run.events[0]
    assert "_patchaudit_probe._recorder" in start["probe_modules"]
    assert "threading" not in start["probe_modules"]
    assert start["schema"] == 1


def test_the_patch_lists_are_not_shadowed_either(tmp_path: Path) -> None:
    _shadowing_modules(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(PROBE_SCRIPT), PROBE_JOB],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["patch_all_returned"] is True and "socket" in data["by_option"]


def test_in_process_load_is_private_and_fresh() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from patchaudit.pytest_plugin._session import load_probe
        first = load_probe()
        second = load_probe()
        api = ["install_in_process", "uninstall_in_process", "emit_owners", "emit_libraries",
               "stale_references"]
        print(json.dumps({
            "api": all(callable(getattr(second, name, None)) for name in api),
            "fresh": first is not second,
            "name": second.__name__,
            "bare": sorted(m for m in sys.modules if m.startswith("_") and m.lstrip("_") in
                           ("state", "recorder", "events", "patches", "frames")),
            "gevent": "gevent" in sys.modules,
        }))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(proc.stdout) == {
        "api": True,
        "fresh": True,
        "name": "_patchaudit_probe._inprocess",
        "bare": [],
        "gevent": False,
    }


def test_gevent_and_eventlet_share_one_table_driven_wrapper() -> None:
    pytest.importorskip("eventlet")
    code = textwrap.dedent(
        """
        import json, warnings
        warnings.simplefilter("ignore")
        from patchaudit.pytest_plugin._session import load_probe
        events = []
        api = load_probe()
        api.install_in_process(events.append)
        import eventlet.patcher
        import gevent.monkey
        import sys
        patches = sys.modules["_patchaudit_probe._patches"]
        wrapped = [gevent.monkey.patch_all, gevent.monkey.patch_socket,
                   eventlet.patcher.monkey_patch, eventlet.monkey_patch]
        print(json.dumps({
            "table": [(w.framework, w.module, w.name) for w in patches.WATCHED],
            "same_code": len({f.__code__ for f in wrapped}) == 1,
            "marked": all(getattr(f, "_patchaudit_wrapper", False) for f in wrapped),
            "names": [f.__name__ for f in wrapped],
        }))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(proc.stdout) == {
        "table": [
            ["gevent", "gevent.monkey", "patch_*"],
            ["eventlet", "eventlet.patcher", "monkey_patch"],
            ["eventlet", "eventlet", "monkey_patch"],
        ],
        "same_code": True,
        "marked": True,
        "names": ["patch_all", "patch_socket", "monkey_patch", "monkey_patch"],
    }


def test_a_stack_caught_inside_a_probe_hook_ends_at_the_app_line(tmp_path: Path) -> None:
    """The timeout can land while a probe hook (recording an import) is inside the stdlib
    (linecache): the report still ends at the app's line, not in what the probe called."""
    import linecache

    from patchaudit.probe._process_wrappers import _stuck_stack
    from patchaudit.probe._state import PROBE_FILES

    probe_file = sorted(PROBE_FILES)[0]
    app_file = str(tmp_path / "app.py")
    scope: dict = {"sys": sys}
    exec(
        compile("def in_stdlib():\n    return sys._getframe()\n", linecache.__file__, "exec"), scope
    )
    exec(compile("def hook():\n    return in_stdlib()\n", probe_file, "exec"), scope)
    exec(compile("def app():\n    return hook()\n", app_file, "exec"), scope)
    frames = _stuck_stack(scope["app"]())
    assert (frames[-1]["file"], frames[-1]["line"]) == (app_file, 2)
