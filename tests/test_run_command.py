"""`patchaudit run -- COMMAND` end to end: real launchers, real processes, real sockets.

Each ``fixtures/apps/run/<case>/`` holds an app, the command that starts it (``run.toml``:
``command``, ``env``, ``options`` (more of patchaudit's), ``requests``, ``concurrency``,
``duration``; ``{port}`` is a free port of 127.0.0.1, ``{target}`` the port of a real HTTP
server there that the command talks to) and expectation comments on the reported lines (the
grammar of ``tests/_expect.py``).
The launchers are the installed ones (gunicorn, locust, celery; uWSGI if it was built), found on
``PATH`` beside this interpreter first; a case whose launcher is not found is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ._expect import expectations_in, mismatches
from .conftest import FIXTURES, isolated_copy, processes_with, require, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.slow  # real gunicorn, celery and locust launchers

CASES_DIR = FIXTURES / "apps" / "run"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "run.toml").exists())
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    """This venv's launchers first on PATH, as an activated venv has them."""
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@contextmanager
def _loopback_app(needed: bool) -> Iterator[str]:
    """``{target}``: the port of a real HTTP server on 127.0.0.1 that the command talks to."""
    if not needed:
        yield ""
        return
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield str(port)
    finally:
        server.kill()
        server.wait()


def _run(project: Path, options: dict, *extra: str) -> tuple[int, dict]:
    with _loopback_app("{target}" in " ".join(options["command"])) as target:
        values = {"{port}": str(_free_port()), "{target}": target}

        def fill(text: str) -> str:
            for key, value in values.items():
                text = text.replace(key, value)
            return text

        command = [fill(part) for part in options["command"]]
        env = {**_env(), **{k: fill(v) for k, v in options.get("env", {}).items()}}
        args = ["run", "--format", "json", *options.get("options", []), *extra]
        for key in ("requests", "concurrency", "duration"):
            if key in options:
                args += [f"--{key}", str(options[key])]
        result = run_cli(*args, "--", *command, cwd=project, env=env, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("case", CASES)
def test_run_reports_exactly_the_expected_findings(case: str, tmp_path: Path) -> None:
    project = isolated_copy(CASES_DIR / case, tmp_path)
    options = tomllib.loads((project / "run.toml").read_text())
    launcher = options["command"][0]
    if shutil.which(launcher, path=_env()["PATH"]) is None:
        pytest.skip(f"needs {launcher}")  # uWSGI compiles at install: .ci/run builds it
    require("gevent")
    if case.endswith("celery"):
        require("psycopg2", "psycogreen")
    expected = expectations_in(project)
    returncode, report = _run(project, options)
    assert report["errors"] == [], report["errors"]
    problems = mismatches(expected, report["findings"])
    assert problems == [], "\n".join(problems) + json.dumps(report["findings"], indent=1)[:4000]
    # Every finding names a recorded process of the command.
    pids = {p["pid"] for p in report["processes"]}
    assert all(f["process"] in pids for f in report["findings"] if "process" in f)
    if launcher == "gunicorn":
        _check_gunicorn(report, options, preload=case.startswith("bad"))
    if case.startswith("bad"):
        assert returncode == 1 and expected
    else:
        serious = [f for f in report["findings"] if f["severity"] in ("error", "warning")]
        assert serious == [] and returncode == 0


def _check_gunicorn(report: dict, options: dict, preload: bool) -> None:
    """The real gunicorn: one master that never patches, two forked workers that did, the
    requests served by them; with preload the stale references are found in a worker."""
    roles = {p["role"]: p["pid"] for p in report["processes"]}
    assert set(roles) == {"master", "worker 1", "worker 2"}, report["processes"]
    timeline = {p["role"]: p for p in report["timeline"]["processes"]}
    assert timeline["master"]["patches"] == []
    for worker in ("worker 1", "worker 2"):
        (patch,) = timeline[worker]["patches"]
        assert "/gunicorn/workers/ggevent.py:" in patch["location"]
    (served,) = report["timeline"]["requests"]
    assert served["statuses"] == {"200": options["requests"]}
    stale = {f["process"] for f in report["findings"] if f["rule"] == "MPA251"}
    assert stale <= {roles["worker 1"], roles["worker 2"]} and bool(stale) is preload


def test_a_command_that_fails_is_an_error_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("import gevent\n\nraise RuntimeError('no config')\n")
    result = run_cli("run", "--no-static", "--", "python", "job.py", cwd=tmp_path, env=_env())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("patchaudit: error:")]
    assert errors[0].endswith("raised RuntimeError: no config at job.py:3"), errors


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give the command after `--`"),
        (["patchaudit-no-such-program"], "command not found on PATH: patchaudit-no-such-program"),
        (["./missing.sh"], "command not found or not executable: ./missing.sh"),
    ],
)
def test_bad_commands_get_one_line(argv: list[str], message: str, tmp_path: Path) -> None:
    result = run_cli("run", "--", *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_a_sitecustomize_of_the_environment_still_runs(tmp_path: Path) -> None:
    """The recorder's sitecustomize hides the one on the path behind it: it must run it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\nopen(os.environ['MARK_FILE'], 'w').write('ran')\n"
    )
    (tmp_path / "job.py").write_text("from gevent import monkey\nmonkey.patch_all()\n")
    mark = tmp_path / "mark.txt"
    env = {**_env(), "PYTHONPATH": str(site), "MARK_FILE": str(mark)}
    result = run_cli(
        "run", "--no-static", "--format", "json", "--", "python", "job.py", cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert mark.read_text() == "ran"
    report = json.loads(result.stdout)
    (process,) = report["timeline"]["processes"]
    assert process["patches"][0]["location"] == "job.py:2"


def test_killing_patchaudit_ends_the_whole_command(tmp_path: Path) -> None:
    """However patchaudit dies (here SIGKILL), the command and its workers die with it."""
    require("gunicorn")
    (tmp_path / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [b'ok']\n"
    )
    marker = f"patchaudit-run-test-{os.getpid()}-{time.time_ns()}"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "patchaudit",
            "run",
            "--no-requests",
            "--duration",
            "60",
            "--",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{_free_port()}",
            "wsgi:application",
        ],
        cwd=tmp_path,
        env={**os.environ, **_env(), "PATCHAUDIT_TEST_MARKER": marker},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while len(processes_with(marker)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(processes_with(marker)) >= 4  # patchaudit, the supervisor, master, workers
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []
