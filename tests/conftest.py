"""Shared helpers: run the analyzer on fixture copies, skip tests of missing optional libraries.

Expectation comments are parsed in ``tests/_expect.py``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the CPUs. Why: many tests spend much of their time
    waiting on real child processes (servers, probes, locust, timeouts), and the extra worker
    runs while they wait: on 2 cores, 4:00 instead of 5:00 (docs/performance.md)."""
    return len(os.sched_getaffinity(0)) + 1


def pytest_configure(config: pytest.Config) -> None:
    """Why: with ``PYTHONDONTWRITEBYTECODE`` set (common in containers and on CI machines),
    each of the suite's patchaudit subprocesses, over a thousand, compiles every module it
    imports again: about 0.1 s of CPU each, over a tenth of the suite's CPU. The session writes
    bytecode to a temporary ``PYTHONPYCACHEPREFIX`` instead, still nothing in the source tree,
    and compiles the package there once. The xdist workers inherit the environment; the probes
    patchaudit starts keep their own ``PYTHONDONTWRITEBYTECODE`` and only read it.
    """
    if hasattr(config, "workerinput") or not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return
    prefix = tempfile.mkdtemp(prefix="patchaudit-tests-bytecode-")
    config.stash[_BYTECODE] = prefix
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", str(REPO / "patchaudit")],
        check=False,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Why: the bytecode folder of :func:`pytest_configure` is the session's alone."""
    prefix = config.stash.get(_BYTECODE, None)
    if prefix is not None:
        shutil.rmtree(prefix, ignore_errors=True)


_BYTECODE = pytest.StashKey[str]()


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # One cache for the session: installed-module summaries are parsed once, not per test.
    os.environ["PATCHAUDIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("patchaudit-cache"))


def require(*modules: str) -> None:
    """Skip the calling test, ``needs <module>``, unless every module can be imported.

    The optional libraries (the ``harness``/``plot``/``test`` extras) are all installed by
    ``.[test]``; a partial environment should report what it lacks rather than fail. Works in
    a test and at module level (before a module imports the library).
    """
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a dotted name whose parent package is missing
            found = False
        if not found:
            pytest.skip(f"needs {module}", allow_module_level=True)


def isolated_copy(source: Path, tmp_path: Path) -> Path:
    """Copy a fixture (file or folder) into an empty project so nothing else leaks in."""
    project = tmp_path / "project"
    if source.is_dir():
        shutil.copytree(source, project)
    else:
        project.mkdir()
        shutil.copy2(source, project / source.name)
    if not (project / "pyproject.toml").exists():
        # Makes the copy its own project root (config, module names, import resolution).
        (project / "pyproject.toml").write_text("[tool.patchaudit]\n")
    return project


def write_project(root: Path, files: dict[str, str]) -> Path:
    """A project root (``[tool.patchaudit]``) holding ``files`` (relative path -> text)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[tool.patchaudit]\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "patchaudit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def processes_with(marker: str) -> list[int]:
    """Live pids (not zombies, not this one) whose environment contains ``marker``.

    Every descendant inherits the environment, so this finds children that detached with
    setsid() or a double fork too, wherever they were re-parented.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry))
    return found


def port_is_closed(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing accepts connections on ``host:port`` any more."""
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError:
        return True
    return False


def assert_nothing_left(marker: str, within: float = 5.0) -> None:
    """No process carries ``marker`` (SIGKILL is asynchronous: give it ``within`` seconds)."""
    deadline = time.monotonic() + within
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


#: gevent 26.9 with its monitor thread on (the probe always turns it on) sometimes never sees a
#: forked child exit: the parent's `os.waitpid` (blocking or WNOHANG in a loop) waits forever,
#: about 1 run in 20 in plain Python with GEVENT_MONITOR_THREAD_ENABLE=1, without patchaudit.
FORK_RACE = "did not finish within the timeout"
T = TypeVar("T")


def once_more_after_fork_race(run: Callable[[], T], errors_of: Callable[[T], list[str]]) -> T:
    """Run an audit of an app that forks; again once if it hit gevent's fork race (above).

    A real hang still fails: it times out the second time too.
    """
    first = run()
    if any(FORK_RACE in e for e in errors_of(first)):
        return run()
    return first
