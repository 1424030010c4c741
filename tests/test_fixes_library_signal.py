"""The MPA704, MPA501 and MPA701 fixes (docs/fixes.md): where each is offered, and that the
fixed modules do what the fix says when they run (real gevent, psycopg2 and psycogreen, in
supervised child processes).

The before -> after pairs themselves are cases of ``tests/test_fixes.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import zmq

from patchaudit import _process
from patchaudit._exec import exec_command

from .conftest import FIXTURES, REPO, run_cli, write_project
from .test_fixes import _json

CASES = FIXTURES / "fixes"
PATCH = "from gevent import monkey\nmonkey.patch_all()\n"


def _python(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int | None, str, str]:
    """Run ``python ARGS`` in a child that dies with the test run."""
    code, out, err = _process.capture(
        exec_command([sys.executable, *args]), cwd=cwd, env=env, timeout=timeout
    )
    return code, out.decode(), err.decode()


def _fixes(project: Path, rule: str) -> list[dict | None]:
    findings = [f for f in _json(project)["findings"] if f["rule"] == rule]
    assert findings
    return [f.get("autofix") for f in findings]


WAIT_CALLBACK = (
    "import app, psycopg2.extensions as e\n"
    "callback = e.get_wait_callback()\n"
    "print(callback and f'{callback.__module__}.{callback.__name__}')\n"
)


@pytest.mark.parametrize(
    ("version", "callback"),
    [("before", "None"), ("after", "psycogreen.gevent.gevent_wait_callback")],
)
def test_the_psycogreen_fix_installs_the_wait_callback(
    tmp_path: Path, version: str, callback: str
) -> None:
    (tmp_path / "app.py").write_text((CASES / "MPA701-after-patch" / f"{version}.py").read_text())
    code, out, err = _python(["-c", WAIT_CALLBACK], tmp_path)
    assert (code, out) == (0, callback + "\n"), err


SIGNALS = """\
import os, signal, sys
import gevent
import app

calls = []
stop = app.request_stop
app.request_stop = lambda *args: (calls.append(args), stop(*args))
worker = app.Worker()
worker.install()
os.kill(os.getpid(), signal.SIGHUP)
gevent.sleep(0.2)
gevent.spawn_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
rounds = []

def poll():
    rounds.append(1)
    if len(rounds) > 500:  # 5 s without the signal: give up
        sys.exit("SIGTERM never reached the handler")
    gevent.sleep(0.01)

app.run(poll)
print(worker.reloads, [(int(s), f) for s, f in calls])
"""


def test_the_fixed_handlers_get_the_signal_number_and_no_frame(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text((CASES / "MPA501-handlers" / "after.py").read_text())
    code, out, err = _python(["-c", SIGNALS], tmp_path)
    assert (code, out) == (0, "1 [(15, None)]\n"), err


def _check(project: Path, *python: str, env: dict[str, str] | None = None) -> str:
    code, out, err = _python(
        [*python, "-m", "patchaudit", "check", "--format", "json", "."],
        project,
        env,
    )
    assert code == 1, err
    return out


def _without_pyzmq(tmp_path: Path) -> dict[str, str]:
    """The environment of an interpreter without pyzmq: the installed packages but zmq, as
    links, on the path of a Python started without its site-packages (``-S``)."""
    farm = tmp_path / "site"
    farm.mkdir()
    site_packages = Path(zmq.__file__).parent.parent
    for entry in site_packages.iterdir():
        if not entry.name.startswith(("zmq", "pyzmq")):
            (farm / entry.name).symlink_to(entry)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(farm)])}


def test_the_zmq_fix_is_display_only_without_pyzmq(tmp_path: Path) -> None:
    project = _project_with(tmp_path, "MPA704-import")
    out = _check(project, "-S", env=_without_pyzmq(tmp_path))
    assert '"applicability": "display-only"' in out
    assert '"applicability": "safe"' not in out


def test_a_zmq_in_the_checked_tree_is_never_imported(tmp_path: Path) -> None:
    """``python -m patchaudit`` run in the tree puts it first on ``sys.path``; with no pyzmq
    installed, a ``zmq`` package of the tree is all there is. It is neither read nor run."""
    project = _project_with(tmp_path, "MPA704-import")
    marker = tmp_path / "ran"
    (project / "zmq" / "green").mkdir(parents=True)
    (project / "zmq" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (project / "zmq" / "green" / "__init__.py").write_text("from zmq import *\n")
    out = _check(project, "-S", env=_without_pyzmq(tmp_path))
    assert not marker.exists()
    assert '"applicability": "display-only"' in out


def _project_with(tmp_path: Path, case: str) -> Path:
    return write_project(tmp_path / "project", {"app.py": (CASES / case / "before.py").read_text()})


ZMQ = PATCH + "import os, zmq\n"


@pytest.mark.parametrize(
    ("source", "applicability"),
    [
        # MPA704: every use is a name zmq.green has
        (PATCH + "import zmq as z\nctx = z.Context()\n", "safe"),
        (ZMQ + "ctx = zmq.Context.instance()\nflags = zmq.NOBLOCK\n", "safe"),
        # a submodule green does not re-export, zmq as a value, assigned to, rebound
        (ZMQ + "ctx = zmq.asyncio.Context()\n", "display-only"),
        (ZMQ + "register(zmq)\n", "display-only"),
        (ZMQ + "zmq.Context = object\n", "display-only"),
        (ZMQ + "def f(zmq):\n    return zmq.Context()\n", "display-only"),
        (PATCH + "from zmq import *\n", "display-only"),
        (PATCH + "from zmq import Context, asyncio\n", "display-only"),
        # not what zmq.green replaces
        (PATCH + "import zmq.eventloop.ioloop\n", None),
    ],
)
def test_the_zmq_fix_is_safe_only_where_green_covers_every_use(
    tmp_path: Path, source: str, applicability: str | None
) -> None:
    project = write_project(tmp_path / "project", {"app.py": source})
    assert {(f or {}).get("applicability") for f in _fixes(project, "MPA704")} == {applicability}


def test_the_zmq_fix_edits_only_the_name_in_an_import_list(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", {"app.py": ZMQ + "ctx = zmq.Context()\n"})
    assert run_cli("check", "--fix", ".", cwd=project).returncode == 0
    assert (project / "app.py").read_text() == PATCH + "import os, zmq.green as zmq\n" + (
        "ctx = zmq.Context()\n"
    )


SIG = "import signal\n" + PATCH


@pytest.mark.parametrize(
    ("source", "applicability"),
    [
        (SIG + "def h(signum, frame):\n    pass\nsignal.signal(signal.SIGTERM, h)\n", "unsafe"),
        (SIG + "def h(*args):\n    pass\nif True:\n    signal.signal(15, h)\n", "unsafe"),
        (SIG + "signal.signal(signal.SIGTERM, lambda s, f: None)\n", "unsafe"),
        # the previous handler is used, by keyword, evaluated twice, the handler cannot take
        # (signum, frame), is no function, or `gevent` is something else here
        (SIG + "def h(s, f):\n    pass\nold = signal.signal(signal.SIGTERM, h)\n", None),
        (SIG + "def h(s, f):\n    pass\nsignal.signal(signal.SIGTERM, handler=h)\n", None),
        (SIG + "def h(s, f):\n    pass\nsignal.signal(next(iter([15])), h)\n", None),
        (SIG + "def h():\n    pass\nsignal.signal(signal.SIGTERM, h)\n", None),
        (SIG + "def h(s, f, extra):\n    pass\nsignal.signal(signal.SIGTERM, h)\n", None),
        (SIG + "signal.signal(signal.SIGTERM, 0)\n", None),
        (SIG + "H = signal.SIG_DFL\nsignal.signal(signal.SIGTERM, H)\n", None),
        (SIG + "old = signal.getsignal(2)\nsignal.signal(signal.SIGINT, old)\n", None),
        (SIG + "gevent = None\nsignal.signal(signal.SIGTERM, lambda s, f: None)\n", None),
        # a handler whose signature cannot be seen: the rewrite is shown, never applied
        (SIG + "from handlers import h\nsignal.signal(signal.SIGTERM, h)\n", "display-only"),
        (
            SIG + "import functools\n@functools.lru_cache\ndef h(s, f):\n    pass\n"
            "signal.signal(signal.SIGTERM, h)\n",
            "display-only",
        ),
    ],
)
def test_the_signal_fix_is_offered_only_where_it_is_exact(
    tmp_path: Path, source: str, applicability: str | None
) -> None:
    project = write_project(tmp_path / "project", {"app.py": source})
    assert {(f or {}).get("applicability") for f in _fixes(project, "MPA501")} == {applicability}


def test_the_signal_fix_reuses_an_import_of_gevent(tmp_path: Path) -> None:
    source = "import gevent\n" + SIG + "signal.signal(signal.SIGTERM, lambda s, f: None)\n"
    project = write_project(tmp_path / "project", {"app.py": source})
    (fix,) = _fixes(project, "MPA501")
    assert fix is not None
    assert [e["content"] for e in fix["edits"]] == [
        "gevent.signal_handler",
        ", signal.SIGTERM, None",
    ]


DB = "import psycopg2\nDSN = 'dbname=shop host=127.0.0.1'\n"


@pytest.mark.parametrize(
    ("files", "applicability"),
    [
        # the patch call is not a top-level statement of the file, or is in another file
        ({"app.py": DB + "if __name__ == '__main__':\n    " + PATCH.replace("\n", "\n    ")}, None),
        (
            {
                "app.py": DB
                + "try:\n    "
                + PATCH.replace("\n", "\n    ")
                + "\nexcept ImportError:\n    pass\n"
            },
            None,
        ),
        ({"db.py": DB, "app.py": PATCH + "import db\n"}, None),
        ({"app.py": DB + "from gevent import monkey; monkey.patch_all()"}, "unsafe"),
    ],
)
def test_the_psycogreen_fix_needs_the_patch_call_at_module_level(
    tmp_path: Path, files: dict[str, str], applicability: str | None
) -> None:
    project = write_project(tmp_path / "project", files)
    assert {(f or {}).get("applicability") for f in _fixes(project, "MPA701")} == {applicability}


def test_the_psycogreen_fix_after_a_last_line_without_a_newline(tmp_path: Path) -> None:
    source = DB + "from gevent import monkey; monkey.patch_all()"
    project = write_project(tmp_path / "project", {"app.py": source})
    fixed = run_cli("check", "--fix", "--unsafe-fixes", ".", cwd=project)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert (project / "app.py").read_text() == (
        source + "\nfrom psycogreen.gevent import patch_psycopg\npatch_psycopg()\n"
    )
