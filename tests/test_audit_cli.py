"""`patchaudit TARGET` on broken targets: one clear line, the right exit code, no leftovers.

Every case runs the real CLI in a subprocess on a small app written to a temporary folder.
Processes are found by a unique marker in their environment, so the orphan check sees any
descendant, including ones that detached with setsid().
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import assert_nothing_left, run_cli, write_project

WSGI = (
    "\n\ndef application(environ, start_response):\n"
    "    start_response('200 OK', [])\n    return [b'ok']\n"
)


PATCHED = "from gevent import monkey\nmonkey.patch_all()\n\n\n"


def _app(tmp_path: Path, files: dict[str, str]) -> Path:
    return write_project(tmp_path, files)


def _audit(
    project: Path, *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], str]:
    marker = f"patchaudit-test-{uuid.uuid4().hex}"
    result = run_cli(*args, cwd=project, env={"PATCHAUDIT_TEST_MARKER": marker}, timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    return result, marker


def test_missing_module_exits_2_with_the_chain(tmp_path: Path) -> None:
    project = _app(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/wsgi.py": "import app.helpers\n" + WSGI,
            "app/helpers.py": "import does_not_exist_anywhere\n",
        },
    )
    result, marker = _audit(project, "app.wsgi", "--format", "json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert len(report["errors"]) == 1
    error = report["errors"][0]
    assert "ModuleNotFoundError" in error and "does_not_exist_anywhere" in error
    assert "app.wsgi -> app.helpers -> does_not_exist_anywhere" in error
    assert_nothing_left(marker)


def test_target_file_not_found_is_one_line(tmp_path: Path) -> None:
    result, _ = _audit(_app(tmp_path, {}), "nothere.py")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"patchaudit: error: target file not found: nothere.py (looked in {tmp_path})"
    ]


def test_syntax_error_in_app_shows_static_findings_and_exits_2(tmp_path: Path) -> None:
    project = _app(
        tmp_path,
        {
            "wsgi.py": "from time import sleep\nfrom gevent import monkey\nmonkey.patch_all()\n"
            "import broken\n" + WSGI,
            "broken.py": "import os\ndef oops(:\n",
        },
    )
    result, _ = _audit(project, "wsgi", "--format", "json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert {(f["rule"], f["path"], f["line"]) for f in report["findings"]} >= {
        ("MPA001", "broken.py", 2),
        ("MPA201", "wsgi.py", 1),
    }
    assert any("SyntaxError" in e for e in report["errors"]), report["errors"]


def test_sys_exit_at_import(tmp_path: Path) -> None:
    project = _app(tmp_path, {"app.py": "import sys\nsys.exit(3)\n"})
    result, marker = _audit(project, "app", "--format", "json", "--no-static")
    assert result.returncode == 2
    assert json.loads(result.stdout)["errors"] == ["the target called sys.exit(3) while importing"]
    assert_nothing_left(marker)


def test_os_exit_at_import(tmp_path: Path) -> None:
    project = _app(tmp_path, {"app.py": "import os\nos._exit(7)\n"})
    result, marker = _audit(project, "app", "--format", "json", "--no-static")
    assert result.returncode == 2
    errors = json.loads(result.stdout)["errors"]
    assert errors == ["the target called os._exit(7) at app.py:2 during import"], errors
    assert_nothing_left(marker)


def test_hang_is_killed_with_its_group(tmp_path: Path) -> None:
    project = _app(tmp_path, {"app.py": "import time\nwhile True:\n    time.sleep(1)\n"})
    started = time.monotonic()
    result, marker = _audit(project, "app", "--format", "json", "--no-static", "--timeout", "3")
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    errors = json.loads(result.stdout)["errors"]
    assert len(errors) == 1 and "did not finish within the timeout" in errors[0], errors
    assert "app.py:3" in errors[0]  # where it was stuck
    assert_nothing_left(marker)


def test_forking_and_detaching_child_is_not_left_behind(tmp_path: Path) -> None:
    project = _app(
        tmp_path,
        {
            "app.py": (
                "import os, time\n"
                "if os.fork() == 0:\n"
                "    os.setsid()\n"
                "    time.sleep(120)\n"
                "    os._exit(0)\n" + WSGI
            )
        },
    )
    result, marker = _audit(project, "app", "--format", "json", "--no-static")
    assert result.returncode in (0, 1), result.stderr
    assert_nothing_left(marker)


def test_closing_all_descriptors_is_reported(tmp_path: Path) -> None:
    # The hub runs (spawning a greenlet starts it), so its event loop's descriptor is closed.
    app = PATCHED + "import os\n\nimport gevent\n\ngevent.spawn(gevent.sleep, 0)\n"
    app += "os.closerange(0, 4096)\n" + WSGI  # line 10
    project = _app(tmp_path, {"app.py": app})
    result, marker = _audit(project, "app", "--format", "json", "--no-static")
    report = json.loads(result.stdout)
    rules = {(f["rule"], f["line"]) for f in report["findings"]}
    assert ("MPA651", 10) in rules, report
    assert_nothing_left(marker)


def test_megabytes_of_output_are_summarised(tmp_path: Path) -> None:
    project = _app(
        tmp_path,
        {
            "app.py": "import sys\nfor i in range(100_000):\n    print('x' * 60, i)\n"
            "print('the end')\n" + WSGI
        },
    )
    result, _ = _audit(project, "app", "--format", "json", "--no-static")
    report = json.loads(result.stdout)
    stdout = report["timeline"]["app_output"]["stdout"]
    assert stdout["bytes"] > 5_000_000
    assert stdout["tail"][-1] == "the end"
    assert len(result.stdout) < 200_000  # the report carries a summary, not the output


def test_interpreter_crash_is_reported_with_the_signal(tmp_path: Path) -> None:
    project = _app(tmp_path, {"app.py": "import os\nos.abort()\n"})
    result, marker = _audit(project, "app", "--format", "json", "--no-static")
    assert result.returncode == 2
    errors = json.loads(result.stdout)["errors"]
    assert errors == ["the target ended the interpreter during the audit (signal 6)"], errors
    assert_nothing_left(marker)


PARKED = PATCHED + (
    "import gevent\n"
    "from gevent.event import Event\n"
    "from gevent.queue import Queue\n"
    "\n"
    "jobs = Queue()\n"  # line 9
    "ready = Event()\n"
    "\n"
    "\n"
    "def consumer():\n"
    "    return jobs.get()\n"  # line 14
    "\n"
    "\n"
    "def waiter():\n"
    "    ready.wait()\n"  # line 18
    "\n"
    "\n"
    "def ticker():\n"  # keeps the hub busy, so gevent cannot see the deadlock
    "    while True:\n"
    "        gevent.sleep(0.2)\n"  # line 23
    "\n"
    "\n"
    "workers = [gevent.spawn(consumer), gevent.spawn(waiter), gevent.spawn(ticker)]\n"
    "gevent.joinall(workers[:2])\n"  # line 27
)


def test_a_hang_names_every_parked_greenlet(tmp_path: Path) -> None:
    project = _app(tmp_path, {"app.py": PARKED})
    args = ("app", "--format", "json", "--no-static", "--timeout", "3")
    result, marker = _audit(project, *args)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    parked = [
        "a greenlet parked at app.py:14 in consumer (`return jobs.get()`) on Queue `jobs`",
        "a greenlet parked at app.py:18 in waiter (`ready.wait()`) on Event `ready`",
        "a greenlet parked at app.py:23 in ticker (`gevent.sleep(0.2)`)",
    ]
    assert report["errors"] == [
        "the target did not finish within the timeout (3s); stuck at app.py:27 in <module>; "
        + "; ".join(parked)
    ]
    assert report["timeline"]["hang"] == parked
    assert_nothing_left(marker)


def test_a_deadlock_gevent_sees_is_one_line_with_the_app_line(tmp_path: Path) -> None:
    app = PATCHED + "import gevent\nfrom gevent.event import Event\n\n"
    app += "gevent.spawn(Event().wait).join()\n"  # line 8: LoopExit, nothing can set it
    project = _app(tmp_path, {"app.py": app})
    result, _ = _audit(project, "app", "--format", "json", "--no-static")
    assert result.returncode == 2
    (error,) = json.loads(result.stdout)["errors"]
    assert "\n" not in error and "\t" not in error, error
    assert error.startswith(
        "cannot import the target: gevent.exceptions.LoopExit: This operation would block forever"
    )
    assert error.endswith(", from app.py:8 (import chain: app)"), error


def test_no_wsgi_callable_audits_without_requests_and_says_why(tmp_path: Path) -> None:
    project = _app(
        tmp_path, {"worker.py": "from gevent import monkey\nmonkey.patch_all()\nJOBS = []\n"}
    )
    result, _ = _audit(project, "worker")
    assert result.returncode == 0, result.stdout + result.stderr
    report_json = json.loads(_audit(project, "worker", "--format", "json")[0].stdout)
    assert report_json["timeline"]["requests"] == []
    full = run_cli("worker", "--format", "full", "--no-color", cwd=project)
    assert "requests were not probed: no `application` or `app` attribute" in full.stdout


@pytest.mark.parametrize(
    ("spec", "module", "reason"),
    [
        ("wsgi:app", "application = None\n", "no `app` attribute in wsgi"),
        ("wsgi:app", "app = 3\n", "`app` is not callable (int)"),
        ("wsgi:create()", "def make():\n    pass\n", "no `create` attribute in wsgi"),
    ],
)
def test_a_named_wsgi_callable_that_is_not_there_exits_2(
    tmp_path: Path, spec: str, module: str, reason: str
) -> None:
    project = _app(
        tmp_path, {"wsgi.py": "from gevent import monkey\nmonkey.patch_all()\n" + module}
    )
    result, marker = _audit(project, spec, "--format", "json", "--no-static")
    assert result.returncode == 2, result.stdout + result.stderr
    assert json.loads(result.stdout)["errors"] == [f"cannot serve `{spec}`: {reason}"]
    assert_nothing_left(marker)


def test_an_import_failure_names_the_line_that_raised(tmp_path: Path) -> None:
    project = _app(
        tmp_path,
        {
            "wsgi.py": "import settings\n" + WSGI,
            "settings.py": "import os\n\nraise RuntimeError('DATABASE_URL is not set')\n",
        },
    )
    result, marker = _audit(project, "wsgi", "--format", "json", "--no-static")
    assert result.returncode == 2
    assert json.loads(result.stdout)["errors"] == [
        "cannot import the target: RuntimeError: DATABASE_URL is not set at settings.py:3 "
        "(import chain: wsgi -> settings)"
    ]
    assert_nothing_left(marker)


def test_an_import_failure_in_a_library_names_the_app_line_too(tmp_path: Path) -> None:
    project = _app(
        tmp_path,
        {
            "wsgi.py": "import settings\n" + WSGI,
            "settings.py": "import json\n\n\nCONFIG = json.loads('{bad')\n",
        },
    )
    result, _ = _audit(project, "wsgi", "--format", "json", "--no-static")
    assert result.returncode == 2
    (error,) = json.loads(result.stdout)["errors"]
    assert error.startswith("cannot import the target: json.decoder.JSONDecodeError: ")
    raised, _, rest = error.partition(", from ")
    assert "/json/decoder.py:" in raised  # the innermost frame: where it was raised
    assert rest == "settings.py:4 (import chain: wsgi -> settings)"  # the app's own line


RAISES = PATCHED + (
    "def application(environ, start_response):\n"
    "    settings = {}\n"
    "    return [settings['greeting'].encode()]\n"  # line 7: KeyError, a 500 from pywsgi
)
REFUSES = PATCHED + (
    "def application(environ, start_response):\n"
    "    start_response('503 Service Unavailable', [])\n"
    "    return [b'down']\n"
)
FLAKY = PATCHED + (
    "import itertools\n"
    "CALLS = itertools.count(1)\n"
    "\n"
    "\n"
    "def application(environ, start_response):\n"
    "    if next(CALLS) % 2 == 0:\n"
    "        raise RuntimeError('every second request')\n"  # line 11
    "    start_response('200 OK', [])\n"
    "    return [b'ok']\n"
)


@pytest.mark.parametrize(
    ("app", "error"),
    [
        (RAISES, "5 of 5 requests to / failed (500 x5): KeyError: 'greeting' at wsgi.py:7"),
        (REFUSES, "5 of 5 requests to / failed (503 x5)"),
        (FLAKY, "2 of 5 requests to / failed (500 x2): RuntimeError: every second request at "
         "wsgi.py:11"),
    ],
    ids=["raises", "503", "one-in-two"],
)  # fmt: skip
def test_failing_requests_are_errors_with_the_app_line(
    tmp_path: Path, app: str, error: str
) -> None:
    project = _app(tmp_path, {"wsgi.py": app})
    args = ("wsgi", "--requests", "4", "--concurrency", "2", "--no-static")
    result, marker = _audit(project, *args, "--format", "json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert json.loads(result.stdout)["errors"] == [error]
    text, _ = _audit(project, *args)
    assert f"patchaudit: error: {error}" in text.stderr.splitlines()
    assert "All checks passed" not in text.stdout
    assert_nothing_left(marker)


def test_an_app_that_serves_its_requests_has_no_request_errors(tmp_path: Path) -> None:
    project = _app(tmp_path, {"wsgi.py": PATCHED + WSGI.lstrip("\n")})
    args = ("wsgi", "--requests", "4", "--no-static", "--format", "json")
    result, _ = _audit(project, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["errors"] == []


def test_python_without_gevent_is_one_line(tmp_path: Path) -> None:
    venv = tmp_path / "bare"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    project = _app(tmp_path / "p", {"app.py": WSGI})
    result, _ = _audit(project, "app", "--python", str(venv / "bin" / "python"), "--no-static")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"patchaudit: error: gevent is not installed in {venv / 'bin' / 'python'}; install it there"
    ]


@pytest.mark.parametrize("bad", ["app:not-a-name", "app:1x", "::"])
def test_bad_target_syntax(tmp_path: Path, bad: str) -> None:
    result, _ = _audit(_app(tmp_path, {"app.py": WSGI}), bad)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
