"""gunicorn's config as gunicorn computes it (the ``--gunicorn-config`` probe job), and its steps
run by the audit where gunicorn runs them.

The job runs in a real child process with this interpreter, with gunicorn's own ``Config`` or,
when gunicorn is hidden, with the fallback; both must agree.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from patchaudit.runtime._gunicorn import load_gunicorn_config
from patchaudit.runtime._target import TargetError, resolve_mode

from .conftest import run_cli

CONFIG = """\
import os

bind = "127.0.0.1:" + os.environ.get("PA_TEST_PORT", "8123")
worker_class = os.environ.get("PA_TEST_WORKER", "gev" + "ent")
preload_app = os.environ.get("PA_TEST_PRELOAD", "true").lower() == "true"
workers = 2 * 2


def post_fork(server, worker):
    server.log.info("forked %s", worker.pid)
"""


def _hidden_gunicorn(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import gunicorn` fails, so the job takes its fallback."""
    shadow = tmp_path / "shadow"
    (shadow / "gunicorn").mkdir(parents=True)
    (shadow / "gunicorn" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return {"PYTHONPATH": str(shadow)}


def _load(project: Path, extra: dict[str, str], path: Path | None = None):
    # PORT changes gunicorn's default bind
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PA_TEST_", "GUNICORN_"))}
    env.pop("PORT", None)
    env.update(extra)
    return load_gunicorn_config(path, python=sys.executable, chdir=project, env=env)


@pytest.fixture(params=["gunicorn", "fallback"])
def reader(request, tmp_path: Path) -> dict[str, str]:
    return {} if request.param == "gunicorn" else _hidden_gunicorn(tmp_path)


def test_expressions_are_evaluated_by_executing_the_file(tmp_path: Path, reader) -> None:
    (tmp_path / "gunicorn.conf.py").write_text(CONFIG)
    config = _load(tmp_path, reader)
    assert config is not None
    assert (config.preload_app, config.worker_class, config.gevent_worker) == (True, "gevent", True)
    assert config.bind == ("127.0.0.1:8123",)
    assert config.hooks == ("post_fork",)
    assert config.settings["workers"] == 4
    assert (config.gunicorn is None) == bool(reader)
    assert resolve_mode("auto", False, config)[0] == "gunicorn-preload"

    config = _load(tmp_path, {**reader, "PA_TEST_PRELOAD": "no", "PA_TEST_PORT": "9001"})
    assert config is not None and not config.preload_app and config.bind == ("127.0.0.1:9001",)
    mode, reason = resolve_mode("auto", False, config)
    assert mode == "gunicorn" and "preload_app off" in reason

    config = _load(tmp_path, {**reader, "PA_TEST_WORKER": "sync"})
    assert config is not None and config.preload_app and not config.gevent_worker
    mode, reason = resolve_mode("auto", False, config)
    assert mode == "gunicorn" and "`sync` is not gevent's" in reason


def test_gunicorn_cmd_args_override_the_file(tmp_path: Path, reader) -> None:
    (tmp_path / "gunicorn.conf.py").write_text(CONFIG)
    (tmp_path / "other.py").write_text("worker_class = 'sync'\n")
    env = {**reader, "PA_TEST_PRELOAD": "false"}
    config = _load(tmp_path, {**env, "GUNICORN_CMD_ARGS": "--preload -b 127.0.0.1:9 -k gevent"})
    assert config is not None
    assert (config.preload_app, config.bind, config.gevent_worker) == (True, ("127.0.0.1:9",), True)
    assert config.env_args == ("--preload", "-b", "127.0.0.1:9", "-k", "gevent")
    assert "GUNICORN_CMD_ARGS" in resolve_mode("auto", False, config)[1]
    # -c in the variable picks the file; an explicit --gunicorn-config wins over it
    config = _load(tmp_path, {**env, "GUNICORN_CMD_ARGS": "-c other.py"})
    assert config is not None and config.path == tmp_path / "other.py"
    assert config.worker_class == "sync" and not config.gevent_worker
    config = _load(
        tmp_path, {**env, "GUNICORN_CMD_ARGS": "-c other.py"}, tmp_path / "gunicorn.conf.py"
    )
    assert config is not None and config.worker_class == "gevent"
    (tmp_path / "broken.py").write_text("import os\nworkers = 1 / 0\n")
    with pytest.raises(TargetError, match=r"^gunicorn config broken.py failed: .* at broken.py:2$"):
        _load(tmp_path, {**env, "GUNICORN_CMD_ARGS": "-c broken.py"})


def test_no_config_and_no_variable_reads_nothing(tmp_path: Path, reader) -> None:
    assert _load(tmp_path, reader) is None
    config = _load(tmp_path, {**reader, "GUNICORN_CMD_ARGS": "-k gevent --preload"})
    assert config is not None and config.path is None
    assert (config.gevent_worker, config.preload_app, config.bind) == (
        True,
        True,
        ("127.0.0.1:8000",),
    )
    assert resolve_mode("auto", False, config)[1].startswith("the defaults and GUNICORN_CMD_ARGS")


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "import os\nworkers = 1 / 0\n",
            "ZeroDivisionError: division by zero at gunicorn.conf.py:2",
        ),
        ("def broken(:\n", "SyntaxError: invalid syntax at gunicorn.conf.py:1"),
        ("import patchaudit_no_such_module\n", "ModuleNotFoundError: No module named"),
        ("worker_class = 'nope.Worker'\n", "class uri 'nope.Worker' invalid or not found"),
    ],
)
def test_a_config_that_raises_is_one_line_and_names_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "gunicorn.conf.py").write_text(text)
    with pytest.raises(TargetError) as caught:
        _load(tmp_path, {})
    message = str(caught.value)
    assert message.startswith("gunicorn config gunicorn.conf.py failed: ")
    assert expected in message and "\n" not in message


def test_the_audit_stops_with_exit_2_on_a_config_that_raises(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def application(environ, start_response):\n    pass\n")
    (tmp_path / "gunicorn.conf.py").write_text("workers = int('many')\n")
    result = run_cli("audit", "app:application", "--no-static", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "patchaudit: error: gunicorn config gunicorn.conf.py failed: ValueError: invalid literal "
        "for int() with base 10: 'many' at gunicorn.conf.py:1"
    ], result.stderr


HOOKS_CONFIG = """\
import json, os, sys

from gevent import events

worker_class = "gevent"
preload_app = os.environ.get("PA_TEST_PRELOAD") == "1"


def _note(step, *objects):
    import gevent.monkey

    state = {
        "step": step,
        "patched": gevent.monkey.is_module_patched("socket"),
        "app_loaded": "web" in sys.modules,
        "objects": [type(o).__name__ for o in objects],
    }
    with open(os.environ["PA_TEST_LOG"], "a") as fh:
        fh.write(json.dumps(state) + "\\n")


def _subscriber(event):
    if isinstance(event, events.GeventDidPatchBuiltinModulesEvent):
        _note("subscriber")


events.subscribers.append(_subscriber)
_note("config")


def on_starting(server):
    # a metrics thread in the master: it does not exist in the forked worker when it patches
    import threading, time

    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    _note("on_starting", server)


def when_ready(server):
    _note("when_ready", server)


def pre_fork(server, worker):
    _note("pre_fork", server, worker)


def post_fork(server, worker):
    assert worker.ppid == server.pid and server.cfg.worker_class == "gevent"
    _note("post_fork", server, worker)


def post_worker_init(worker):
    assert callable(worker.wsgi)
    _note("post_worker_init", worker)
"""

_HOOK_ORDER = ["config", "on_starting", "when_ready", "pre_fork", "post_fork", "subscriber"]


@pytest.mark.parametrize("preload", [False, True], ids=["worker-loads", "preload"])
def test_hooks_run_where_and_when_gunicorn_runs_them(tmp_path: Path, preload: bool) -> None:
    (tmp_path / "web.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'ok']\n"
    )
    (tmp_path / "gunicorn.conf.py").write_text(HOOKS_CONFIG)
    log = tmp_path / "steps.jsonl"
    env = {"PA_TEST_LOG": str(log), "PA_TEST_PRELOAD": "1" if preload else "0"}
    args = ("audit", "web:application", "--no-static", "--format", "json")
    result = run_cli(*args, "--requests", "2", "--concurrency", "1", cwd=tmp_path, env=env)
    report = json.loads(result.stdout)
    assert (result.returncode, report["findings"]) == (0, []), result.stderr
    assert report["timeline"]["mode"] == ("gunicorn-preload" if preload else "gunicorn")
    assert report["timeline"]["patches"][0]["threads"] == ["MainThread"]
    # the config job ran the file once too (in its own process): keep the audit's steps
    steps = [json.loads(line) for line in log.read_text().splitlines()][1:]
    assert [s["step"] for s in steps] == [*_HOOK_ORDER, "post_worker_init"]
    patched = {s["step"]: s["patched"] for s in steps}
    assert [k for k, v in patched.items() if v] == ["subscriber", "post_worker_init"]
    loaded = {s["step"]: s["app_loaded"] for s in steps}
    # with preload the master has the app before its hooks; without, only the worker loads it
    assert loaded["on_starting"] is preload and loaded["post_fork"] is preload
    assert loaded["post_worker_init"] is True
    assert steps[4]["objects"] == ["_Server", "_Worker"]


def test_a_hook_that_raises_stops_the_audit_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text("def application(environ, start_response):\n    pass\n")
    (tmp_path / "gunicorn.conf.py").write_text(
        "worker_class = 'gevent'\n\n\ndef post_fork(server, worker):\n    raise OSError('no db')\n"
    )
    result = run_cli("audit", "web:application", "--no-static", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "patchaudit: error: gunicorn's `post_fork` hook raised OSError: no db at gunicorn.conf.py:5"
    ]


def test_what_gunicorn_loads_itself_is_not_blamed_on_the_config(tmp_path: Path) -> None:
    """gunicorn's master has `ssl`, `socket` and `threading` before it executes the config, so a
    config that imports them (here through urllib) did not make them load before the patch."""
    (tmp_path / "web.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'ok']\n"
    )
    (tmp_path / "gunicorn.conf.py").write_text(
        "import urllib.request\n\nworker_class = 'gevent'\nbind = '127.0.0.1:8000'\n"
    )
    args = ("audit", "web:application", "--no-static", "--format", "json")
    result = run_cli(*args, "--requests", "2", "--concurrency", "1", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert (result.returncode, report["findings"]) == (0, []), report["findings"]
    early = report["timeline"]["patched_modules_loaded_before_patch"]
    assert "ssl" not in {m["module"] for m in early}


def test_a_hook_that_needs_more_than_the_stand_ins_is_a_note(tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'ok']\n"
    )
    (tmp_path / "gunicorn.conf.py").write_text(
        "worker_class = 'gevent'\n\n\ndef post_fork(server, worker):\n    worker.tmp.notify()\n"
    )
    args = ("audit", "web:application", "--no-static", "--format", "json")
    result = run_cli(*args, "--requests", "2", "--concurrency", "1", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert (result.returncode, report["errors"], report["findings"]) == (0, [], [])
    steps = {s["step"]: s for s in report["timeline"]["gunicorn"]}
    gap = "AttributeError: '_Worker' object has no attribute 'tmp'"
    assert (steps["config"]["stopped"], steps["post_fork"]["stopped"]) == (None, gap)
    full = run_cli(*args[:-1], "full", "--no-color", "--requests", "1", cwd=tmp_path)
    text = " ".join(full.stdout.split())  # the terminal report wraps lines
    assert f"note: gunicorn's post_fork at gunicorn.conf.py:4 stopped at {gap}" in text
