"""Tests for the runtime probe (the audit job of patchaudit/probe/) and its launcher.

No mocks: every test writes a small application into tmp_path and runs the real probe in a real
child interpreter with the installed gevent (and eventlet where needed), then checks the events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from patchaudit.runtime._launcher import (
    PROBE_SCRIPT,
    ProbeError,
    ProbeRun,
    parse_events,
    run_probe,
    summarize_output,
)

NO_SERVE: dict[str, Any] = {"paths": []}


def write_app(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def make_spec(
    project: Path,
    module: str,
    *,
    mode: str = "as-is",
    callable_: str | None = None,
    factory: bool = False,
    serve: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "target": {
            "kind": "module",
            "module": module,
            "file": None,
            "callable": callable_,
            "factory": factory,
        },
        "mode": mode,
        "chdir": str(project),
        "pythonpath": [],
        "serve": {"paths": ["/"], "requests": 6, "concurrency": 3, "request_timeout": 10}
        if serve is None
        else serve,
        "app_roots": [str(project)],
    }


def probe(tmp_path: Path, spec: dict[str, Any], timeout: float = 60, **kw: Any) -> ProbeRun:
    return run_probe(spec, python=sys.executable, timeout=timeout, workdir=tmp_path / "work", **kw)


def only(run: ProbeRun, name: str) -> dict[str, Any]:
    found = run.all(name)
    assert len(found) == 1, (name, found, run.stderr_summary.text())
    return found[0]


def main_process(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if not e.get("forked_child")]


# --- event plumbing ----------------------------------------------------------------------------


def test_app_that_patches_first(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "app/__init__.py": "",
            "app/wsgi.py": """
                import gevent.monkey
                gevent.monkey.patch_all()
                import time

                def application(environ, start_response):
                    time.sleep(0.01)
                    start_response("200 OK", [("Content-Type", "text/plain")])
                    return [b"ok"]
            """,
        },
    )
    run = probe(tmp_path, make_spec(project, "app.wsgi"))
    assert run.returncode == 0 and run.signal is None and not run.timed_out
    start = run.events[0]
    assert start["event"] == "start"
    assert start["gevent_version"] and start["python_version"].count(".") == 2
    assert "gevent" not in start["startup_modules"] and "threading" not in start["probe_modules"]

    patch = only(run, "patch")
    assert patch["framework"] == "gevent" and patch["function"] == "patch_all"
    assert patch["file"] == str(project / "app" / "wsgi.py") and patch["line"] == 2
    assert patch["main_thread"] is True and patch["threads"] == ["MainThread"]
    assert patch["returned"] is True and patch["warnings"] == []
    assert "app.wsgi" in patch["modules_before"] and "ssl" not in patch["modules_before"]

    imports = {e["module"]: e for e in run.all("import")}
    assert imports["app"]["importer"] == "<target>"
    assert imports["app.wsgi"]["importer"] == "<target>"
    assert imports["gevent"]["importer"] == "app.wsgi"
    assert imports["gevent"]["phase"] == "pre-patch"
    assert imports["app.wsgi"]["file"] == str(project / "app" / "wsgi.py")

    settings = only(run, "settings")
    assert settings["settings"]["socket"] is True
    assert "sleep" in settings["saved"]["time"]

    target = only(run, "target")
    assert target["callable"] == "application" and target["wsgi"] is True
    owners = only(run, "owners")["owners"]
    assert owners["socket.socket"].startswith("gevent") and owners["time.sleep"] == "gevent.hub"
    assert not [e for e in run.all("stale") if e["holder_module"].startswith("app")]
    assert only(run, "stale_scan")["originals"] > 10

    serve = only(run, "serve")
    assert serve["statuses"] == {"200": 6} and serve["single_status"] == 200
    assert len(serve["latencies"]) == 6 and serve["errors"] == []
    assert not run.all("libraries")  # no checked library loaded: no events
    assert run.events[-1] == {**run.events[-1], "event": "done", "status": "ok", "errors": 0}


def test_from_time_import_sleep_before_patch_is_stale(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "throttle.py": """
                from time import sleep
                import gevent.monkey
                gevent.monkey.patch_all()

                class Pool:
                    pass
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "throttle", serve=NO_SERVE))
    stale = [e for e in run.all("stale") if e["holder_module"] == "throttle"]
    assert stale == [
        {
            **stale[0],
            "holder": "throttle",
            "holder_kind": "module",
            "holder_file": str(project / "throttle.py"),
            "name": "sleep",
            "original": "time.sleep",
        }
    ]
    target = only(run, "target")
    assert target["wsgi"] is False and target["reason"] == "no `application` or `app` attribute"
    assert not run.all("serve")


def test_stale_class_attribute_and_subclass(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "pool.py": """
                import queue, threading

                class Pool:
                    QueueCls = queue.LifoQueue

                class Worker(threading.Thread):
                    pass

                import gevent.monkey
                gevent.monkey.patch_all()
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "pool", serve=NO_SERVE))
    mine = {(e["holder"], e["holder_kind"], e["name"], e["original"]) for e in run.all("stale")}
    assert ("pool.Pool", "class", "QueueCls", "queue.LifoQueue") in mine
    assert ("pool.Worker", "subclass", "__bases__", "threading.Thread") in mine


def test_blocking_handler_collapses_and_reports_block(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "slow.py": """
                import time
                from gevent.monkey import get_original

                real_sleep = get_original("time", "sleep")

                def app(environ, start_response):
                    if environ["PATH_INFO"] == "/block":
                        real_sleep(0.3)  # the native sleep: blocks the hub
                    else:
                        time.sleep(0.3)  # patched: cooperative
                    start_response("200 OK", [])
                    return [b"done"]
            """
        },
    )
    serve = {"paths": ["/coop", "/block"], "requests": 4, "concurrency": 4, "max_blocking": 0.1}
    run = probe(tmp_path, make_spec(project, "slow", mode="gunicorn", serve=serve))
    by_path = {e["path"]: e for e in run.all("serve")}
    coop, block = by_path["/coop"], by_path["/block"]
    assert coop["statuses"] == {"200": 4} and block["statuses"] == {"200": 4}
    assert coop["wall"] < 2 * coop["single"]  # cooperative: 4 requests in ~1x
    assert block["wall"] >= 0.8 * 4 * block["single"]  # blocking: 4 requests in ~4x

    blocks = run.all("block")
    assert blocks, run.stderr_summary.text()
    assert all(b["phase"] == "serve" for b in blocks)
    assert {b["path"] for b in blocks} == {"/block"}
    app_frames = [f for b in blocks for f in b["stack"] if f["file"] == str(project / "slow.py")]
    assert app_frames and app_frames[0]["function"] == "app"
    assert app_frames[0]["code"] == "real_sleep(0.3)  # the native sleep: blocks the hub"


def test_blocking_at_import_time(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "blocky.py": """
                import gevent
                from gevent.monkey import get_original
                gevent.sleep(0)  # the hub, and with it the monitor thread, starts
                get_original("time", "sleep")(0.5)
            """
        },
    )
    serve = {"paths": [], "max_blocking": 0.1}
    run = probe(tmp_path, make_spec(project, "blocky", mode="gunicorn", serve=serve))
    blocks = run.all("block")
    assert blocks and all(b["phase"] == "import" and b["path"] is None for b in blocks)
    assert blocks[0]["blocking_time"] == 0.1  # gevent passes its threshold, not a measurement
    assert blocks[0]["stack"][-1]["file"] == str(project / "blocky.py")
    assert blocks[0]["stack"][-1]["line"] == 4 and blocks[0]["stack_source"] == "frames"


def test_gunicorn_mode_patches_for_an_app_without_gevent(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "plain.py": """
                import socket

                def application(environ, start_response):
                    start_response("200 OK", [])
                    return [socket.socket.__module__.encode()]
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "plain", mode="gunicorn"))
    patch = only(run, "patch")
    assert patch["file"] == "<patchaudit:gunicorn>" and patch["line"] is None
    assert patch["function"] == "patch_all" and patch["via"] == "wrapper"
    imports = {e["module"]: e for e in run.all("import")}
    assert imports["plain"]["phase"] == "post-patch"
    assert only(run, "serve")["statuses"] == {"200": 6}


def test_uwsgi_mode_patches_after_import(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {"factory.py": "from time import sleep\n\ndef create_app():\n    return sleep\n"},
    )
    spec = make_spec(project, "factory", mode="uwsgi", callable_="create_app()", serve=NO_SERVE)
    run = probe(tmp_path, spec)
    target = only(run, "target")
    assert target["callable"] == "create_app" and target["factory_called"] is True
    assert target["wsgi"] is True
    assert only(run, "patch")["file"] == "<patchaudit:uwsgi>"
    names = {(e["holder"], e["original"]) for e in run.all("stale")}
    assert ("factory", "time.sleep") in names


def test_patch_first_baseline(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {"late.py": "from time import sleep\n\ndef app(environ, start_response):\n    pass\n"},
    )
    run = probe(tmp_path, make_spec(project, "late", mode="patch-first"))
    assert only(run, "patch")["file"] == "<patchaudit:patch-first>"
    assert run.all("settings") and run.all("stale_scan")
    assert not [e for e in run.all("stale") if e["holder_module"] == "late"]
    assert not run.all("serve") and not run.all("owners")
    assert only(run, "done")["status"] == "ok"


def test_patch_all_that_bypasses_the_wrapper_is_seen_through_gevents_event(
    tmp_path: Path,
) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "sneaky.py": """
                import gevent.monkey
                gevent.monkey.patch_all.__wrapped__()  # the unwrapped function
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "sneaky", serve=NO_SERVE))
    patch = only(run, "patch")  # and not one per nested patch_os(), patch_thread(), ...
    assert patch["via"] == "GeventWillPatchAllEvent" and patch["function"] == "patch_all"
    assert patch["file"] == str(project / "sneaky.py") and patch["line"] == 2
    assert patch["kwargs"]["socket"] is True and patch["args"] is None
    assert only(run, "settings")["settings"]["ssl"] is True


def test_patching_off_the_main_thread_and_late_ssl_warnings(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "threaded.py": """
                from ssl import SSLContext
                import threading

                def patch():
                    import gevent.monkey
                    gevent.monkey.patch_all()

                t = threading.Thread(target=patch, name="patcher")
                t.start()
                t.join()
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "threaded", serve=NO_SERVE))
    patch = only(run, "patch")
    assert patch["main_thread"] is False and "patcher" in patch["threads"]
    assert patch["file"] == str(project / "threaded.py") and patch["line"] == 6
    messages = [w["message"] for w in patch["warnings"]]
    assert any(
        m.startswith("Monkey-patching ssl after ssl has already been imported") for m in messages
    )
    assert any(m.startswith("Monkey-patching outside the main native thread") for m in messages)
    assert {w["category"] for w in patch["warnings"]} == {"MonkeyPatchWarning"}
    # gevent warns with stacklevel=3, which would point into the probe: mapped to the caller.
    assert {(w["file"], w["line"]) for w in patch["warnings"]} == {(patch["file"], 6)}
    assert "ssl" in patch["modules_before"] and "threading" in patch["modules_before"]
    # Real CPython + gevent behaviour (also without the probe): patching `_thread` from another
    # thread while the main thread is importing breaks the import's module lock.
    error = only(run, "error")
    assert error["type"] == "RuntimeError" and error["message"] == "cannot release un-acquired lock"
    assert error["traceback"][-1]["function"] == "release"  # importlib's frames, kept


def test_file_target(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {"wsgi_file.py": "def application(environ, start_response):\n    return []\n"},
    )
    spec = make_spec(project, "", mode="uwsgi", serve=NO_SERVE)
    spec["target"] = {
        "kind": "file",
        "module": None,
        "file": str(project / "wsgi_file.py"),
        "callable": None,
        "factory": False,
    }
    run = probe(tmp_path, spec)
    first = run.all("import")[0]
    assert first["module"] == "wsgi_file" and first["importer"] == "<target>"
    assert first["file"] == str(project / "wsgi_file.py") and first["phase"] == "pre-patch"
    target = only(run, "target")
    assert target["module"] == "wsgi_file" and target["wsgi"] is True


def test_fork_through_gevents_patched_fork_points_at_the_app(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "forker.py": """
                import os, time
                pid = os.fork()
                if pid == 0:
                    # Exiting at once races gevent's child watcher (waitpid then never
                    # returns, gevent 26.9.0, also without the probe).
                    time.sleep(0.2)
                    os._exit(0)
                os.waitpid(pid, 0)
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "forker", mode="gunicorn", serve=NO_SERVE))
    fork = only(run, "fork")
    assert fork["what"] == "os.fork" and fork["after_patch"] is True
    assert (fork["file"], fork["line"]) == (str(project / "forker.py"), 2)
    assert fork["phase"] == "import" and fork["contained"] is False
    assert fork["via"] == "forker"
    assert not run.all("exit")  # the child's os._exit is not the probe's
    assert only(run, "done")["status"] == "ok"


def test_gevent_subprocess_fork_exec_is_not_a_fork_event(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "thumbs.py": """
                from gevent import monkey
                monkey.patch_all()
                import subprocess, sys
                subprocess.run([sys.executable, "-c", "pass"], check=True)
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "thumbs", serve=NO_SERVE))
    assert only(run, "done")["status"] == "ok"
    assert run.all("fork") == []


def test_hang_in_a_greenlet_wait_reports_the_main_greenlet(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "waits.py": """
                import socket
                server = socket.socket()
                server.bind(("127.0.0.1", 0))
                server.listen()
                server.accept()  # patched: the main greenlet waits in the hub forever
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "waits", mode="gunicorn"), timeout=3)
    assert run.timed_out
    terminated = only(run, "terminated")
    assert terminated["stack"][-1]["function"] == "run"  # the hub's loop
    waiting = [f for f in terminated["main_greenlet_stack"] if f["file"].endswith("waits.py")]
    assert waiting[-1]["line"] == 5


# --- errors ---------------------------------------------------------------------------------


def test_sys_exit_at_import(tmp_path: Path) -> None:
    project = write_app(tmp_path / "proj", {"quits.py": "import sys\nsys.exit(3)\n"})
    run = probe(tmp_path, make_spec(project, "quits"))
    error = only(run, "error")
    assert error["kind"] == "system-exit" and error["code"] == 3 and error["phase"] == "import"
    assert error["traceback"][-1]["file"] == str(project / "quits.py")
    assert error["import_chain"] == ["quits"]
    assert only(run, "done")["status"] == "error"
    assert run.returncode == 1 and not run.all("target") and not run.all("serve")


def test_import_error_two_modules_deep(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "",
            "pkg/wsgi.py": "from pkg import models\n",
            "pkg/models.py": "from pkg import db\n",
            "pkg/db.py": "import not_installed_driver_xyz\n",
        },
    )
    run = probe(tmp_path, make_spec(project, "pkg.wsgi"))
    error = only(run, "error")
    assert error["kind"] == "import-error" and error["type"] == "ModuleNotFoundError"
    assert error["name"] == "not_installed_driver_xyz"
    assert error["import_chain"] == ["pkg.wsgi", "pkg.models", "pkg.db", "not_installed_driver_xyz"]
    assert [f["file"] for f in error["traceback"]][-1] == str(project / "pkg" / "db.py")
    missing = [e for e in run.all("import") if e["module"] == "not_installed_driver_xyz"]
    assert missing[0]["found"] is False and missing[0]["importer"] == "pkg.db"


def test_syntax_error(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj", {"good.py": "import broken\n", "broken.py": "def f(:\n    pass\n"}
    )
    run = probe(tmp_path, make_spec(project, "good"))
    error = only(run, "error")
    assert error["kind"] == "syntax-error" and error["file"] == str(project / "broken.py")
    assert error["line"] == 1 and error["import_chain"] == ["good", "broken"]


def test_request_errors_are_reported(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "boom.py": """
                def app(environ, start_response):
                    raise ValueError("no database")
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "boom"))
    assert only(run, "serve")["statuses"] == {"500": 6}
    error = only(run, "request_error")
    assert error["type"] == "ValueError" and error["message"] == "no database"
    assert error["path"] == "/" and error["traceback"][-1]["file"] == str(project / "boom.py")


# --- containment ----------------------------------------------------------------------------


def test_timeout_inside_the_probes_import_hook_names_the_app_line(tmp_path: Path) -> None:
    """An app that spends its time in imports is mostly inside the probe's import recorder when
    the timeout's SIGTERM lands: the report names the app's import line, not the probe."""
    body = (
        "import importlib\ni = 0\nwhile True:\n    i += 1\n    try:\n"
        "        importlib.import_module(f'missing_{i}')\n    except ImportError:\n        pass\n"
    )
    project = write_app(tmp_path / "proj", {"hooky.py": body})
    # 4 s: on a loaded machine the probe's own start-up (gevent, the recorder) can take most
    # of 2 s, and a signal then lands before the app runs at all.
    run = probe(tmp_path, make_spec(project, "hooky"), timeout=4)
    stack = only(run, "terminated")["stack"]
    # Mostly line 6 (the import, reported from inside the recorder); on a loaded machine the
    # signal can land on another line of the loop. Never in the probe's own code.
    innermost = stack[-1]
    assert innermost["file"] == str(project / "hooky.py"), stack
    assert 3 <= innermost["line"] <= 8, stack


@pytest.mark.slow  # waits out a timeout
def test_hang_at_import_times_out_and_group_is_gone(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj", {"hangs.py": "import time\nwhile True:\n    time.sleep(60)\n"}
    )
    # Long enough for the import to start on a loaded machine; a signal that lands while the
    # probe records an import still reports the app's line (see the probe's _stuck_stack).
    run = probe(tmp_path, make_spec(project, "hangs"), timeout=5)
    assert run.timed_out and run.duration < 12
    assert run.signal in (signal.SIGTERM, signal.SIGKILL)
    # run.pid is the probe's supervisor, the leader of the group the probe runs in.
    pid = only(run, "start")["pid"]
    assert pid != run.pid
    for gone in (lambda: os.killpg(run.pid, 0), lambda: os.kill(pid, 0)):
        with pytest.raises(ProcessLookupError):
            gone()
    terminated = only(run, "terminated")
    assert terminated["phase"] == "import"
    assert terminated["stack"][-1]["file"] == str(project / "hangs.py")
    assert terminated["stack"][-1]["line"] == 3
    assert only(run, "done")["reason"] == "SIGTERM"


def test_app_that_leaves_the_group_still_gets_the_timeout(tmp_path: Path) -> None:
    """The probe runs below its supervisor, so the app's own os.setsid() succeeds (as in a
    gunicorn worker); the timeout's SIGTERM still finds the probe by the run's marker."""
    project = write_app(
        tmp_path / "proj",
        {"leaves.py": "import os, time\nos.setsid()\nwhile True:\n    time.sleep(60)\n"},
    )
    run = probe(tmp_path, make_spec(project, "leaves"), timeout=2)
    assert run.timed_out and run.signal in (signal.SIGTERM, signal.SIGKILL)
    assert only(run, "fork")["what"] == "os.setsid" and only(run, "fork")["contained"] is False
    assert only(run, "terminated")["stack"][-1]["line"] == 4
    with pytest.raises(ProcessLookupError):
        os.kill(only(run, "start")["pid"], 0)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_forking_daemonizing_app_leaves_no_process(tmp_path: Path) -> None:
    marker = "patchaudit-fork-" + uuid.uuid4().hex
    project = write_app(
        tmp_path / "proj",
        {
            "daemonize.py": """
                import os, time
                if os.fork() == 0:
                    os.setsid()  # would leave the launcher's process group
                    if os.fork() == 0:
                        time.sleep(600)  # the "daemon"
                # the parent and the first child both fall through and finish the import
                time.sleep(0.5)

                def app(environ, start_response):
                    start_response("200 OK", [])
                    return [b"ok"]
            """
        },
    )
    # The forked processes keep the probe's argv, which includes the unique work directory.
    run = run_probe(
        make_spec(project, "daemonize"),
        python=sys.executable,
        timeout=60,
        workdir=tmp_path / marker,
    )
    assert not _processes_with(marker)
    main = main_process(run.events)
    assert [e["event"] for e in main].count("done") == 1
    assert only(run, "done")["status"] == "ok" and only(run, "target")["wsgi"] is True
    forks = run.all("fork")
    parent_fork = [e for e in forks if not e.get("forked_child")]
    assert [(e["what"], e["line"]) for e in parent_fork] == [("os.fork", 2)]
    assert parent_fork[0]["file"] == str(project / "daemonize.py")
    setsid = [e for e in forks if e["what"] == "os.setsid"]
    assert setsid and setsid[0]["contained"] is True and setsid[0]["forked_child"] is True
    # Nothing but fork facts and imports ever comes from a forked child.
    assert {e["event"] for e in run.events if e.get("forked_child")} <= {"fork", "import"}


def test_os_exit_at_import_still_writes_done(tmp_path: Path) -> None:
    project = write_app(tmp_path / "proj", {"bye.py": "import os\nos._exit(7)\n"})
    run = probe(tmp_path, make_spec(project, "bye"))
    assert run.returncode == 7
    exit_event = only(run, "exit")
    assert exit_event["code"] == 7 and exit_event["line"] == 2
    assert only(run, "done")["reason"] == "os._exit"


def test_abort_reports_signal_and_keeps_events(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {"crash.py": "import helper_mod\nimport os\nos.abort()\n", "helper_mod.py": "X = 1\n"},
    )
    run = probe(tmp_path, make_spec(project, "crash"))
    assert run.signal == signal.SIGABRT and run.returncode is None and not run.timed_out
    modules = [e["module"] for e in run.all("import")]
    assert modules[:2] == ["crash", "helper_mod"]
    assert not run.all("done")


def test_huge_output_is_summarized(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "noisy.py": """
                import sys
                for i in range(100000):
                    sys.stdout.write("line %06d %s\\n" % (i, "x" * 40))
                sys.stdout.write("the last line")
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "noisy", serve=NO_SERVE))
    out = run.stdout_summary
    assert out.bytes > 5_000_000 and out.lines == 100001
    assert out.head[0].startswith("line 000000 ") and len(out.head) == 10
    assert out.tail[-1] == "the last line" and out.tail[-2].startswith("line 099999 ")
    assert only(run, "done")["status"] == "ok"


# --- eventlet -------------------------------------------------------------------------------


def test_eventlet_patched_after_gevent(tmp_path: Path) -> None:
    pytest.importorskip("eventlet")
    project = write_app(
        tmp_path / "proj",
        {
            "mixed.py": """
                import gevent.monkey
                gevent.monkey.patch_all()
                import eventlet
                eventlet.monkey_patch()
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "mixed", serve=NO_SERVE), timeout=60)
    patches = run.all("patch")
    assert [(p["framework"], p["line"]) for p in patches] == [("gevent", 2), ("eventlet", 4)]
    assert "modules_before" in patches[0] and "modules_before" not in patches[1]
    eventlet_patch = patches[1]
    assert eventlet_patch["function"] == "monkey_patch"
    assert eventlet_patch["already_patched"].get("socket") is True
    assert eventlet_patch["file"] == str(project / "mixed.py")
    # Real behaviour, also without the probe: eventlet re-patching `_thread` in the middle of an
    # import breaks that import's module lock (FM-06).
    assert only(run, "error")["message"] == "cannot release un-acquired lock"
    # The process is still described after the failed import.
    assert only(run, "owners")["owners"]["time.sleep"] == "eventlet.greenthread"
    assert only(run, "stale_scan") and not run.all("target")


# --- launcher -------------------------------------------------------------------------------


def test_missing_interpreter(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-python")
    with pytest.raises(ProbeError, match="^Python interpreter not found: "):
        run_probe(make_spec(tmp_path, "x"), python=missing, timeout=30, workdir=tmp_path)


def test_interpreter_without_gevent(tmp_path: Path) -> None:
    venv = tmp_path / "bare"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with pytest.raises(ProbeError) as info:
        run_probe(make_spec(tmp_path, "x"), python=python, timeout=30, env=env, workdir=tmp_path)
    assert str(info.value) == f"gevent is not installed in {python}; install it there"


def test_parse_events_tolerates_a_truncated_last_line() -> None:
    data = b'{"event": "start", "t": 0}\n{"event": "import", "t": 0.1}\n{"event": "imp'
    events, bad = parse_events(data)
    assert [e["event"] for e in events] == ["start", "import"] and bad == 1


def test_summarize_short_output(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_bytes(b"one\n" + b"y" * 1000 + b"\nthree\n")
    summary = summarize_output(path)
    assert summary.lines == 3 and summary.tail == []
    assert summary.head[0] == "one" and len(summary.head[1]) == 300 and summary.head[2] == "three"
    assert summarize_output(tmp_path / "missing.txt").bytes == 0


def test_probe_script_is_standalone() -> None:
    source = PROBE_SCRIPT.read_text()
    assert "patchaudit" not in "".join(
        line for line in source.splitlines() if line.startswith(("import ", "from "))
    )
    # It runs by path, without patchaudit importable, and explains its usage.
    proc = subprocess.run(
        [sys.executable, "-I", str(PROBE_SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--spec-file" in proc.stderr
