"""What dies when: the supervised children, and `patchaudit TARGET` under signals and kill -9.

Real processes and real signals only. Every run carries a unique marker in its environment,
which every descendant inherits wherever it is re-parented (``setsid -f``, double forks), so
"nothing is left" means no live process with the marker. Each CLI run also gets its own
``TMPDIR``, which must be empty afterwards. The apps are written to ``tmp_path`` per test, as in
``test_audit_cli.py``: they are process-lifetime scenarios, not rule fixtures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from patchaudit import _process, _scratch, _supervise

from .conftest import assert_nothing_left, port_is_closed, processes_with

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux (/proc, prctl)"
)

MARKER_VAR = "PATCHAUDIT_TEST_MARKER"
#: A program that leaves its process group twice over: a double fork with setsid() in between.
DETACH = (
    "import os, sys, time\n"
    "if os.fork():\n    os._exit(0)\n"
    "os.setsid()\n"
    "if os.fork():\n    os._exit(0)\n"
    "open(sys.argv[1], 'w').close()\n"
    "time.sleep(300)\n"
)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "it") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def wait_gone(predicate: Callable[[], object], within: float = 5.0) -> float:
    """Seconds until ``predicate()`` is falsy; fails after ``within``."""
    start = time.monotonic()
    while predicate():
        if time.monotonic() - start > within:
            pytest.fail(f"still there after {within}s: {predicate()}")
        time.sleep(0.01)
    return time.monotonic() - start


# --- the supervised child, unit level ----------------------------------------------------------

CHILD = """
import importlib.util, os, sys
path = os.environ.get("PATCHAUDIT_SUPERVISE_SCRIPT")
if path:
    spec = importlib.util.spec_from_file_location("_patchaudit_supervise", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.supervise()
import json, signal, subprocess, time

action = sys.argv[1]
if action == "exit":
    print(json.dumps({"env": sorted(k for k in os.environ if k.startswith("PATCHAUDIT_")),
                      "marker": os.environ.get("PATCHAUDIT_RUN_MARKER"),
                      "ppid": os.getppid(), "pgid": os.getpgrp()}), flush=True)
    sys.exit(int(sys.argv[2]))
if action == "signal":
    os.kill(os.getpid(), int(sys.argv[2]))
if action in ("detach", "detach-sleep"):
    marks = sys.argv[2]
    subprocess.Popen(["setsid", "-f", sys.executable, "-c", "import time; time.sleep(300)"])
    subprocess.Popen([sys.executable, "-c", sys.argv[3], os.path.join(marks, "detached")])
    while not os.path.exists(os.path.join(marks, "detached")):
        time.sleep(0.01)
    open(os.path.join(marks, "ready"), "w").close()
    if action == "detach":
        sys.exit(0)
time.sleep(300)
"""


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A marker in this process's environment, so every child started here inherits it."""
    value = f"patchaudit-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(MARKER_VAR, value)
    yield value
    assert_nothing_left(value)


def test_exit_code_and_environment(child_script: Path, marker: str) -> None:
    child = _process.spawn([sys.executable, str(child_script), "exit", "7"], stdout=subprocess.PIPE)
    out, _ = child.process.communicate(timeout=30)
    child.kill()
    assert child.returncode == 7
    seen = json.loads(out)
    # The program runs below its supervisor, in the group the supervisor leads.
    assert seen["ppid"] == child.pid and seen["pgid"] == child.pid
    # Only the marker is left for the program: the watchdog settings were the supervisor's.
    assert seen["marker"] == child.marker
    watchdog = {
        _supervise.FD_VAR,
        _supervise.PARENT_VAR,
        _supervise.DEADLINE_VAR,
        _supervise.SCRIPT_VAR,
        _supervise.CLEANUP_VAR,
    }
    assert _supervise.MARKER_VAR in seen["env"] and not watchdog & set(seen["env"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_signal_is_mirrored(child_script: Path, marker: str, signum: int) -> None:
    child = _process.spawn([sys.executable, str(child_script), "signal", str(int(signum))])
    assert child.wait(timeout=30) == -signum
    child.kill()


def test_leftovers_die_with_the_program(child_script: Path, tmp_path: Path, marker: str) -> None:
    """The supervisor itself kills what the program detached, before it exits."""
    child = _process.spawn([sys.executable, str(child_script), "detach", str(tmp_path), DETACH])
    assert child.wait(timeout=30) == 0
    # No waiting: once the supervisor has exited, the setsid -f and double-fork children it
    # adopted are already dead (zombies at most).
    assert processes_with(marker) == []
    child.kill()


def test_deadline_kills_the_tree(
    child_script: Path, tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_process, "DEADLINE_GRACE", 0.0)
    start = time.monotonic()
    child = _process.spawn(
        [sys.executable, str(child_script), "detach-sleep", str(tmp_path), DETACH], deadline=2.0
    )
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert 1.5 < time.monotonic() - start < 6
    assert processes_with(marker) == []
    child.kill()


def test_supervisor_ignores_signals_meant_for_its_parent(child_script: Path, marker: str) -> None:
    child = _process.spawn([sys.executable, str(child_script), "sleep"])
    wait_for(lambda: len(processes_with(marker)) >= 2, what="supervisor and program")
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(child.pid, signum)
    time.sleep(0.3)
    assert child.poll() is None
    child.kill()
    assert child.returncode == -signal.SIGKILL


MIDDLE = """
import sys, time
from patchaudit import _process
child = _process.spawn([sys.executable, *sys.argv[1:]])
time.sleep(300)
"""


def test_kill_9_of_the_parent_ends_the_whole_tree(
    child_script: Path, tmp_path: Path, marker: str
) -> None:
    """The parent (patchaudit) dies by SIGKILL: its supervised child, and everything that
    child detached, follow."""
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, str(child_script), "detach-sleep", str(tmp_path), DETACH]
    )
    try:
        wait_for(lambda: (tmp_path / "ready").exists(), what="the detached grandchildren")
        tree = set(processes_with(marker)) - {middle.pid}
        assert len(tree) >= 4  # supervisor, program, setsid -f child, double-forked child
        middle.kill()
        middle.wait()
        took = wait_gone(lambda: processes_with(marker), within=3.0)
    finally:
        middle.kill()
        middle.wait()
    assert took < 3.0


INTERRUPTIBLE = """
import os, signal, sys, time
from patchaudit import _process, _scratch
with _process.interruptible():
    pid = os.fork()
    if pid == 0:  # a pool worker's view: default actions, not the parent's handler
        os._exit(0 if signal.getsignal(signal.SIGINT) is signal.SIG_DFL else 1)
    forked_ok = os.waitpid(pid, 0)[1] == 0
    with _scratch.scratch_dir("unit") as scratch:
        child = _process.spawn([sys.executable, sys.argv[1], "sleep"])
        print("ready", scratch, forked_ok, flush=True)
        try:
            time.sleep(300)
        except _process.Interrupted as exc:
            try:
                _process.spawn([sys.executable, sys.argv[1], "sleep"])
            except _process.Interrupted:
                print("refused", exc.exit_code, flush=True)
            time.sleep(300)  # a slow cleanup: the second signal must end it at once
"""


def test_second_signal_exits_at_once_and_leaves_nothing(
    child_script: Path, tmp_path: Path, marker: str
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, str(child_script)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[0] == "ready" and ready[2] == "True", ready
        assert Path(ready[1]).is_dir()
        wait_for(lambda: len(processes_with(marker)) >= 3, what="the supervised sleeper")
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().split() == ["refused", "143"]
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 143  # the first signal's code
        assert time.monotonic() - start < 2
    finally:
        proc.kill()
        proc.wait()
    assert not Path(ready[1]).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_scratch_dir_removes_what_dead_runs_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    namespace = _scratch._namespace()
    left = tmp_path / f"patchaudit-run-{namespace}-{dead.pid}-audit-abc123"
    live = tmp_path / f"patchaudit-run-{namespace}-{os.getpid()}-audit-def456"
    elsewhere = tmp_path / f"patchaudit-run-1-{dead.pid}-audit-ghi789"  # another pid namespace
    for folder in (left, live, elsewhere):
        folder.mkdir()
        (folder / "events.jsonl").write_text("{}\n")
    with _scratch.scratch_dir("audit") as scratch:
        assert scratch.is_dir() and scratch.parent == tmp_path
        assert not left.exists() and live.exists() and elsewhere.exists()
    assert not scratch.exists()


# --- the runtime audit under signals ---------------------------------------------------------

WSGI = """

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

# Imports slowly, after detaching two grandchildren; a stale `sleep` for the static check.
SLOW_IMPORT = """\
from time import sleep
from gevent import monkey
monkey.patch_all()
import os, subprocess, sys, time
MARKS = {marks!r}
print("importing slowly", flush=True)
subprocess.Popen(["setsid", "-f", sys.executable, "-c", "import time; time.sleep(300)"])
done = os.path.join(MARKS, "detached-%d" % os.getpid())
subprocess.Popen([sys.executable, "-c", {detach!r}, done])
while not os.path.exists(done):
    time.sleep(0.01)
open(os.path.join(MARKS, "import-%d" % os.getpid()), "w").close()
time.sleep(300)
"""

# Serves, and the handler sleeps: the probe is listening on 127.0.0.1 when the signal comes.
SLOW_HANDLER = """\
import os, time
MARKS = {marks!r}


def application(environ, start_response):
    open(os.path.join(MARKS, "serving-" + environ["SERVER_PORT"]), "w").close()
    time.sleep(300)
    start_response("200 OK", [])
    return [b"late"]
"""


class Cli:
    """`patchaudit app ...` on ``app`` in a session of its own (a group SIGINT is a terminal's
    Ctrl-C), with its own marker and ``TMPDIR``."""

    def __init__(
        self,
        root: Path,
        app: str,
        *args: str,
        env: dict[str, str] | None = None,
        command: tuple[str, ...] = ("app",),
    ):  # `command` is the patchaudit command line, before the options
        self.marker = f"patchaudit-test-{uuid.uuid4().hex}"
        self.project = root / "project"
        self.marks = root / "marks"
        self.tmpdir = root / "tmpdir"
        for folder in (self.project, self.marks, self.tmpdir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.project / "pyproject.toml").write_text("[tool.patchaudit]\n")
        (self.project / "app.py").write_text(app.format(marks=str(self.marks), detach=DETACH))
        self.args = [sys.executable, "-m", "patchaudit", *command, *args]
        self.env = {
            **os.environ,
            MARKER_VAR: self.marker,
            "TMPDIR": str(self.tmpdir),
            **(env or {}),
        }
        self.process: subprocess.Popen[str] | None = None
        self.stdout = self.stderr = ""

    def start(self) -> Cli:
        self.process = subprocess.Popen(
            self.args,
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_for(self, predicate: Callable[[], object], what: str) -> object:
        """``predicate()`` once truthy; fails at once (with its output) if the CLI ended."""

        def check() -> object:
            assert self.process is not None
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                pytest.fail(f"the CLI ended ({self.process.returncode}) before {what}: {err}")
            return predicate()

        return wait_for(check, what=what)

    def marks_named(self, prefix: str) -> list[Path]:
        return sorted(self.marks.glob(prefix + "*"))

    def finish(self, timeout: float = 60) -> int:
        """Wait for the CLI's exit (killing its group if it takes longer) and its output."""
        assert self.process is not None
        if self.process.returncode is None:
            try:
                self.stdout, self.stderr = self.process.communicate(timeout=timeout)
            finally:
                if self.process.poll() is None:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.communicate()
        return self.process.returncode

    def assert_contained(self) -> None:
        assert "Traceback" not in self.stderr, self.stderr
        assert_nothing_left(self.marker)
        wait_gone(lambda: list(self.tmpdir.iterdir()))


def _send(cli: Cli, how: str) -> None:
    if how == "SIGINT":  # a terminal's Ctrl-C reaches the whole foreground group
        os.killpg(cli.pid, signal.SIGINT)
    elif how == "SIGINT twice":  # the second one lands while the first is being handled
        os.killpg(cli.pid, signal.SIGINT)
        time.sleep(0.03)
        try:
            os.killpg(cli.pid, signal.SIGINT)
        except ProcessLookupError:  # the first one was handled faster than that
            pass
    else:
        os.kill(cli.pid, signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)


EXPECTED_CODE = {"SIGINT": 130, "SIGINT twice": 130, "SIGTERM": 143, "SIGKILL": -9}
INTERRUPTED = {
    "SIGINT": "interrupted by Ctrl-C: results are partial",
    "SIGTERM": "interrupted by SIGTERM: results are partial",
}
HOW = ["SIGINT", "SIGINT twice", "SIGTERM", "SIGKILL"]


def _interrupt(cli: Cli, how: str) -> dict | None:
    """Signal the running CLI ``how``; assert the exit code, that it took under 5 s and that
    nothing of its tree is left; return its JSON report when it printed one (SIGINT/SIGTERM),
    after asserting the one stderr line and the ``interrupted`` field."""
    start = time.monotonic()
    _send(cli, how)
    code = cli.finish(timeout=30)
    took = time.monotonic() - start
    assert code == EXPECTED_CODE[how], cli.stderr
    assert took < 5, took
    cli.assert_contained()
    if how not in INTERRUPTED:
        return None
    assert cli.stderr.splitlines() == [f"patchaudit: {INTERRUPTED[how]}"]
    report = json.loads(cli.stdout)
    assert (report["interrupted"], report["errors"]) == (INTERRUPTED[how], [])
    return report


@pytest.mark.parametrize("how", HOW)
def test_signal_while_importing(tmp_path: Path, how: str) -> None:
    cli = Cli(tmp_path, SLOW_IMPORT, "--format", "json", "--timeout", "60").start()
    try:
        # Both runs (the audit and its patch-first baseline) are importing, and each has
        # detached two grandchildren.
        cli.wait_for(lambda: len(cli.marks_named("import-")) == 2, "both probes importing")
        report = _interrupt(cli, how)
    finally:
        cli.finish()
    if report is not None:
        # The static check had finished: its finding is in the partial report.
        assert ("MPA201", "app.py", 1) in {
            (f["rule"], f["path"], f["line"]) for f in report["findings"]
        }
        # What the killed probe wrote and printed was still read.
        timeline = report["timeline"]
        assert timeline["exit"]["signal"] == signal.SIGKILL
        assert timeline["app_output"]["stdout"]["head"] == ["importing slowly"]
        assert timeline["loaded_before_patch"] > 0


def _port(mark: Path) -> int:
    return int(mark.name.rpartition("-")[2])


@pytest.mark.parametrize("how", HOW)
def test_signal_while_serving(tmp_path: Path, how: str) -> None:
    cli = Cli(tmp_path, SLOW_HANDLER, "--no-static", "--format", "json", "--timeout", "60")
    cli.start()
    try:
        mark = cli.wait_for(lambda: cli.marks_named("serving-"), "a request in the handler")
        port = _port(mark[0])
        assert not port_is_closed(port)  # the probe is listening
        report = _interrupt(cli, how)
    finally:
        cli.finish()
    assert port_is_closed(port)
    if report is not None:
        # Patched (gunicorn's way), imported and serving, but no request had finished.
        timeline = report["timeline"]
        assert timeline["mode"] == "gunicorn" and timeline["patches"][0]["function"] == "patch_all"
        assert timeline["replaced"].get("socket") and timeline["requests"] == []
        assert timeline["exit"]["signal"] == signal.SIGKILL


def _big_project(cli: Cli) -> None:
    """Enough files that the static check takes a while, in worker processes forked from the
    CLI (they are in its process group; what patchaudit spawns is not)."""
    package = cli.project / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    body = "".join(f"def f{i}(x):\n    return [x + {i} for _ in range(3)]\n" for i in range(80))
    for n in range(1200):
        (package / f"m{n}.py").write_text("import gevent\nfrom time import sleep\n" + body)


BIG_APP = "from gevent import monkey\nmonkey.patch_all()\nimport pkg\n" + WSGI


@pytest.mark.parametrize("command", ["audit", "check"])
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_interrupt_during_static_analysis(tmp_path: Path, command: str, how: str) -> None:
    """The audit's static check, and `patchaudit check`: the pool workers go too."""
    argv = ("app",) if command == "audit" else ("check", ".")
    cli = Cli(tmp_path, BIG_APP, command=argv)
    _big_project(cli)
    cli.start()
    try:
        workers = cli.wait_for(lambda: _forks_of(cli.pid), "the parser pool")
        # Stopped, they can never finish their work: only being killed ends them, and a pool
        # shutdown that waited for them would never return.
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        _send(cli, how)
        code = cli.finish(timeout=30)
        took = time.monotonic() - start
    finally:
        cli.finish()
    assert code == EXPECTED_CODE[how] and took < 5, (code, took, cli.stderr)
    if command == "audit":  # a report with what there was: nothing, and why
        text = INTERRUPTED[how]
        summary = f"{text[0].upper()}{text[1:]}. No problems found so far (0 files analysed)."
        assert cli.stdout.splitlines()[-1] == summary, cli.stdout
        assert cli.stderr.splitlines() == [f"patchaudit: {INTERRUPTED[how]}"]
    else:  # no report: one line
        assert cli.stdout == ""
        assert cli.stderr.splitlines() == [f"patchaudit: {INTERRUPTED[how].partition(':')[0]}"]
    cli.assert_contained()


def _forks_of(pid: int) -> list[int]:
    """Live children of ``pid`` in its own process group (spawned children have their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == str(pid) and fields[2] == str(pid) and fields[0] != "Z":
            found.append(int(entry))
    return found


# --- the runtime audit, apps that misbehave -----------------------------------------------


def test_grandchildren_detached_at_import_do_not_survive(tmp_path: Path) -> None:
    app = SLOW_IMPORT.replace("time.sleep(300)\n", "") + WSGI
    cli = Cli(tmp_path, app, "--no-static", "--format", "json", "--timeout", "60").start()
    code = cli.finish()
    assert code in (0, 1), cli.stderr
    report = json.loads(cli.stdout)
    assert report["errors"] == [] and report["timeline"]["requests"], report
    # Both runs detached a `setsid -f` child and a double-forked one, and they are all gone.
    assert len(cli.marks_named("detached-")) == 2
    cli.assert_contained()


def test_app_that_signals_its_parent(tmp_path: Path) -> None:
    """The probe's parent is its supervisor, which ignores the signals: the audit goes on."""
    app = (
        "import os, signal\n"
        "for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
        "    os.kill(os.getppid(), signum)\n" + WSGI
    )
    cli = Cli(tmp_path, app, "--no-static", "--format", "json", "--timeout", "60").start()
    code = cli.finish()
    assert code == 0, (code, cli.stdout, cli.stderr)
    report = json.loads(cli.stdout)
    assert report["errors"] == []
    assert report["timeline"]["requests"][0]["statuses"] == {"200": 20}
    cli.assert_contained()


def test_app_reads_the_environment_at_import(tmp_path: Path) -> None:
    """The audited run sees the user's whole environment, as the app would in production."""
    app = (
        "import os, shutil\n"
        "DATABASE_URL = os.environ['DATABASE_URL']\n"
        "assert shutil.which('sh'), os.environ.get('PATH')\n"
        "assert os.environ['PATCHAUDIT_TEST_MARKER']\n" + WSGI
    )
    env = {"DATABASE_URL": "postgresql://db.invalid/shop"}
    cli = Cli(tmp_path, app, "--no-static", "--format", "json", env=env).start()
    code = cli.finish()
    assert code == 0, (cli.stdout, cli.stderr)
    report = json.loads(cli.stdout)
    assert report["errors"] == [] and report["timeline"]["requests"], report
    cli.assert_contained()
