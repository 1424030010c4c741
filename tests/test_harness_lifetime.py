"""`patchaudit bench` and `patchaudit demo` under faults: SIGINT, SIGTERM, a second SIGINT and
``kill -9`` in the middle of a run, with real servers on 127.0.0.1, real load and real signals.

After each: the exact exit status, the "interrupted" line and the partial results where there
are any, a prompt exit, no process left (found by an environment marker every child inherits),
the port closed, the temporary folder (TMPDIR points at an empty one) empty, no shared-memory
segment in /dev/shm, and nothing imported from the directory bench was started in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("hdrh", reason="the harness extra is not installed")

from patchaudit.harness._children import _safe_path_command  # noqa: E402

from .conftest import port_is_closed, processes_with  # noqa: E402

EXIT_BOUND = 6.0  # seconds from the signal to bench's exit (it takes well under 1 s)
GONE_BOUND = 3.0  # seconds after the exit until no child is left (the supervisors: < 1 s)
# Runs "patchaudit bench|demo ..." the way the console script does: sys.path[0] is not the
# current directory, so only the children could import the json.py planted there.
LAUNCH = "import sys\ndel sys.path[0]\nfrom patchaudit._cli import main\nsys.exit(main())\n"
PLANTED = ("json", "hdrh", "gevent")  # each writes IMPORTED-<name> next to itself if imported


def _cmdlines(pids: list[int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return lines


def _shm() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    exit_s: float  # from the (first) signal to the exit
    gone_s: float  # from the (first) signal until no marked process was left
    tmp_left: list[str]
    shm_new: set[str]
    imported: list[str]


@dataclass
class Started:
    process: subprocess.Popen
    marker: str
    tmp: Path
    cwd: Path
    shm_before: set[str]
    stderr_lines: list[str]


@contextmanager
def _command(tmp_path: Path, *args: str) -> Iterator[Started]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in PLANTED:
        (cwd / f"{name}.py").write_text(
            f"open({str(tmp_path / f'IMPORTED-{name}')!r}, 'w').close()\n"
        )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = f"patchaudit-lifetime-{uuid.uuid4().hex}"
    env = {**os.environ, "TMPDIR": str(tmp), "PATCHAUDIT_TEST_MARKER": marker, "NO_COLOR": "1"}
    started = Started(
        subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        marker,
        tmp,
        cwd,
        _shm(),
        [],
    )
    try:
        yield started
    finally:
        if started.process.poll() is None:
            started.process.kill()
            started.process.communicate()
        for pid in processes_with(marker):  # never leave anything for the next test
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _wait_for_run(started: Started) -> int:
    """Read stderr until bench announces a run; return the server's port."""
    while True:
        line = started.process.stderr.readline()
        assert line, "".join(started.stderr_lines)
        started.stderr_lines.append(line)
        if "127.0.0.1:" in line:
            return int(line.split("127.0.0.1:")[1].split(",")[0])


def _signal_and_collect(started: Started, signals: tuple[int, ...]) -> Outcome:
    process = started.process
    sent = time.monotonic()
    for number, signum in enumerate(signals):
        if number:
            time.sleep(0.05)
        process.send_signal(signum)
    stdout, rest = process.communicate(timeout=30)
    exit_s = time.monotonic() - sent
    while processes_with(started.marker) and time.monotonic() - sent < exit_s + GONE_BOUND:
        time.sleep(0.02)
    gone_s = time.monotonic() - sent
    left = _cmdlines(processes_with(started.marker))
    assert left == [], left
    return Outcome(
        returncode=process.returncode,
        stdout=stdout,
        stderr="".join(started.stderr_lines) + rest,
        exit_s=exit_s,
        gone_s=gone_s,
        tmp_left=sorted(os.listdir(started.tmp)),
        shm_new=_shm() - started.shm_before,
        imported=sorted(p.name for p in started.cwd.parent.glob("IMPORTED-*")),
    )


def _assert_clean(outcome: Outcome) -> None:
    assert outcome.exit_s < EXIT_BOUND, outcome
    assert outcome.gone_s < outcome.exit_s + GONE_BOUND, outcome
    assert outcome.tmp_left == [], outcome.tmp_left
    assert outcome.shm_new == set(), outcome.shm_new
    assert outcome.imported == [], outcome.imported
    assert "Traceback" not in outcome.stderr and "resource_tracker" not in outcome.stderr


BENCH = ("bench", "--servers", "gevent", "-c", "4", "-n", "10000000", "--max-time", "60")
BENCH_CASES = {
    "sigint": ((signal.SIGINT,), 130),
    "sigterm": ((signal.SIGTERM,), 143),
    "double-sigint": ((signal.SIGINT, signal.SIGINT), 130),
    "kill-9": ((signal.SIGKILL,), -9),
}


@pytest.mark.parametrize("case", list(BENCH_CASES))
def test_bench_stopped_mid_sweep_leaves_nothing_behind(case: str, tmp_path: Path) -> None:
    signals, code = BENCH_CASES[case]
    with _command(tmp_path, *BENCH, "--format", "json") as started:
        port = _wait_for_run(started)
        time.sleep(1.0)
        running = _cmdlines(processes_with(started.marker))
        # bench, the server and its supervisor, the client processes and theirs
        assert sum("_serve.py" in line for line in running) == 2, running
        assert sum("harness._worker" in line for line in running) >= 2, running
        (scratch,) = started.tmp.iterdir()  # the one folder for every temporary file
        assert scratch.name.startswith("patchaudit-run-") and "-bench-" in scratch.name
        outcome = _signal_and_collect(started, signals)
    assert outcome.returncode == code, outcome.stderr
    _assert_clean(outcome)
    assert port_is_closed(port)
    if case in ("sigint", "sigterm"):
        name = "Ctrl-C" if case == "sigint" else "SIGTERM"
        assert f"patchaudit bench: interrupted by {name}: partial results above" in outcome.stderr
        (run,) = json.loads(outcome.stdout)["runs"]
        assert run["error"] == "interrupted" and run["completed"] > 0, run
        assert outcome.exit_s < 2.0, outcome  # the promise; EXIT_BOUND is for loaded machines
    if case == "double-sigint":
        assert outcome.exit_s < 2.0, outcome


@pytest.mark.parametrize("engine", ["ab", "wrk"])
def test_external_engines_die_with_bench(engine: str, tmp_path: Path) -> None:
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed")
    args = [*BENCH, "--engine", engine]
    with _command(tmp_path, *args) as started:
        port = _wait_for_run(started)
        time.sleep(1.0)
        running = _cmdlines(processes_with(started.marker))
        # The tool itself (exec'd by its supervisor, whose command line is _exec.py's)
        assert any(line.startswith(f"{shutil.which(engine)} ") for line in running), running
        outcome = _signal_and_collect(started, (signal.SIGKILL,))
    assert outcome.returncode == -9
    _assert_clean(outcome)
    assert port_is_closed(port)


def test_bench_with_an_app_module_from_the_cwd_imports_only_that(tmp_path: Path) -> None:
    """App import paths are explicit and keep working; the planted modules stay unimported."""
    with _command(tmp_path, "bench", "benchapp:app", "--servers", "gevent,threaded",
                  "-c", "2", "-n", "20", "--format", "json") as started:  # fmt: skip
        (started.cwd / "benchapp.py").write_text(
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Length', '2')])\n"
            "    return [b'ok']\n"
        )
        stdout, stderr = started.process.communicate(timeout=60)
    assert started.process.returncode == 0, stderr
    assert [(r["server"], r["completed"]) for r in json.loads(stdout)["runs"]] == [
        ("gevent", 20),
        ("threaded", 20),
    ]
    assert sorted(p.name for p in tmp_path.glob("IMPORTED-*")) == []
    assert os.listdir(started.tmp) == []


# ------------------------------------------------------------------------------------ demo

DEMO_CASES = {
    "sigint": ((signal.SIGINT,), 130),
    "sigterm": ((signal.SIGTERM,), 143),
    "kill-9": ((signal.SIGKILL,), -9),
}


def _demo_apps(folder: Path) -> Path:
    """One shape: a quick "bad" app, then a "fixed" one slow enough to be interrupted."""
    quick = "def application(environ, start_response):\n"
    quick += "    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n"
    slow = "import gevent\n\n\n" + quick.replace("    start", "    gevent.sleep(5)\n    start", 1)
    for variant, body in (("bad", quick), ("fixed", slow)):
        (folder / "stale-sleep" / variant).mkdir(parents=True)
        (folder / "stale-sleep" / variant / "app.py").write_text(body)
    return folder


def _wait_until_serving(started: Started, label: str) -> None:
    """Until a probe whose command line names ``label`` (its work folder) is running."""
    deadline = time.monotonic() + 30
    while not any(label in line for line in _cmdlines(processes_with(started.marker))):
        assert time.monotonic() < deadline and started.process.poll() is None
        time.sleep(0.05)


@pytest.mark.parametrize("case", list(DEMO_CASES))
def test_demo_stopped_mid_run_leaves_nothing_behind(case: str, tmp_path: Path) -> None:
    signals, code = DEMO_CASES[case]
    apps = _demo_apps(tmp_path / "apps")
    args = ["demo", "--apps", str(apps), "--shapes", "stale-sleep", "-n", "8", "-c", "2"]
    with _command(tmp_path, *args, "--timeout", "60", "--format", "json") as started:
        _wait_until_serving(started, "stale-sleep-fixed-")  # the first app is done
        time.sleep(0.5)
        outcome = _signal_and_collect(started, signals)
    assert outcome.returncode == code, outcome.stderr
    _assert_clean(outcome)
    if case != "kill-9":
        name = "Ctrl-C" if case == "sigint" else "SIGTERM"
        assert f"patchaudit: interrupted by {name}; showing what finished" in outcome.stderr
        document = json.loads(outcome.stdout)
        assert document["interrupted"] is True
        assert [(r["variant"], r["completed"]) for r in document["runs"]] == [("bad", 8)]
        assert outcome.exit_s < 2.0, outcome


# ------------------------------------------------------------------------- safe-path mode


@pytest.mark.parametrize("has_safe_path", [True, False], ids=["-P", "3.10 bootstrap"])
def test_children_never_import_from_the_current_directory(
    has_safe_path: bool, tmp_path: Path
) -> None:
    """Both forms of the command: -P (3.11+) and the -c bootstrap used on Python 3.10."""
    if has_safe_path and sys.version_info < (3, 11):
        pytest.skip("-P needs Python 3.11")
    (tmp_path / "json.py").write_text("raise SystemExit('json.py from the cwd was imported')\n")
    package = tmp_path / "lib" / "probe_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    code = "import json, sys\nprint(json.dumps([json.__file__, __name__, sys.argv[1:]]))\n"
    (package / "main.py").write_text(code)
    (tmp_path / "lib" / "script.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}  # kept: the app may need it
    for command in (
        _safe_path_command(sys.executable, has_safe_path, tmp_path / "lib" / "script.py", None),
        _safe_path_command(sys.executable, has_safe_path, None, "probe_pkg.main"),
    ):
        result = subprocess.run(
            [*command, "ARG"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        json_file, name, argv = json.loads(result.stdout)
        assert not json_file.startswith(str(tmp_path)), json_file  # the standard library's
        assert (name, argv) == ("__main__", ["ARG"])
