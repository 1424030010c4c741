"""The built-in load client: one process per core, each driving its share with gevent.

Every request is raw HTTP/1.1 on a non-blocking socket with TCP_NODELAY, driven by gevent's
hub. By default each request opens a new connection, like ``ab`` without ``-k``; ``--timeout``
bounds each whole request (connect, send, full response). A response counts only if its status
is 2xx/3xx and its whole body arrived (Content-Length, chunked, or until close).

``run_load`` starts the processes (``_worker.py``), releases them together, reads their shared
counters live for the progress bar, and merges their histograms when they are done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .stats import (
    DONE,
    END_NS,
    FAILED,
    GO,
    OK,
    PEAK_RSS_KB,
    START_NS,
    STATE,
    STATE_READY,
    STOP,
    LiveStats,
    RunResult,
    SharedCounters,
    latency_summary,
    new_histogram,
)

Progress = Callable[[LiveStats], None]


class ClientError(Exception):
    """The client processes could not run; the run's ``error`` says why."""


class LoadInterrupted(Exception):
    """Ctrl-C during a run; ``result`` holds what was measured until then."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result


def default_processes() -> int:
    return len(os.sched_getaffinity(0))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(
    host: str,
    port: int,
    path: str = "/",
    n: int = 1000,
    c: int = 10,
    keep_alive: bool = False,
    timeout: float = 30.0,
    processes: int | None = None,
    progress: Progress | None = None,
    *,
    max_time: float = 300.0,
    cpus: set[int] | None = None,
    server: str = "",
    mode: str = "",
) -> RunResult:
    """Send ``n`` GET requests with ``c`` connections in flight; stop after ``max_time`` s.

    Raises LoadInterrupted (carrying the partial result) on KeyboardInterrupt.
    """
    from .servers import check_loopback

    check_loopback(host)
    processes = max(1, min(processes or default_processes(), c, n))
    counters = SharedCounters(processes)
    result = RunResult(server, mode, "builtin", c, n, keep_alive, port=port)
    workers: list[tuple[subprocess.Popen, Path, Path]] = []
    interrupted = False
    try:
        for index, (share_n, share_c) in enumerate(
            zip(_split(n, processes), _split(c, processes), strict=True)
        ):
            config = {
                "shm": counters.name,
                "processes": processes,
                "index": index,
                "host": host,
                "port": port,
                "path": path,
                "n": share_n,
                "c": share_c,
                "keep_alive": keep_alive,
                "timeout": timeout,
                "max_time": max_time,
                "parent": os.getpid(),
            }
            workers.append(_spawn_worker(config, cpus))
        _wait_state(counters, workers, STATE_READY, timeout=60.0)
        counters.set_control(GO, time.monotonic_ns())
        try:
            _watch(counters, workers, n, max_time, progress)
        except KeyboardInterrupt:
            interrupted = True
            counters.set_control(STOP, 1)  # workers abandon in-flight requests and report
        problems = _finish(workers)
        _collect(counters, workers, result)
        if problems:
            result.error = problems
    except ClientError as exc:
        result.error = str(exc)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for process, out, err in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.unlink(missing_ok=True)
            err.unlink(missing_ok=True)
        counters.close()
    if interrupted:
        result.error = "interrupted"
        raise LoadInterrupted(result)
    if result.error is None and result.completed + result.failed < n:
        result.error = f"stopped by --max-time ({max_time:g}s) after {result.completed:,} requests"
    return result


def _spawn_worker(config: dict, cpus: set[int] | None) -> tuple[subprocess.Popen, Path, Path]:
    # Files, not pipes: nothing can block if a worker writes more than a pipe holds.
    fd_out, out = tempfile.mkstemp(prefix="patchaudit-client-", suffix=".out")
    fd_err, err = tempfile.mkstemp(prefix="patchaudit-client-", suffix=".err")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "patchaudit.harness._worker", json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=fd_out,
            stderr=fd_err,
            start_new_session=True,  # Ctrl-C goes to the parent, which stops us in order
        )
    finally:
        os.close(fd_out)
        os.close(fd_err)
    if cpus:
        os.sched_setaffinity(process.pid, cpus)
    return process, Path(out), Path(err)


def _wait_state(counters: SharedCounters, workers, state: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(counters.slot(i, STATE) < state for i in range(len(workers))):
        for process, _out, err in workers:
            if process.poll() is not None:
                raise ClientError(f"client process failed to start: {_tail(err)}")
        if time.monotonic() > deadline:
            raise ClientError(f"client processes did not start within {timeout:g}s")
        time.sleep(0.01)


def _watch(counters: SharedCounters, workers, n: int, max_time: float, progress) -> None:
    started = time.monotonic()
    hard_deadline = started + max_time + 15.0  # workers stop themselves at max_time
    while any(process.poll() is None for process, _o, _e in workers):
        if progress is not None:
            progress(_live(counters, n, started))
        if time.monotonic() > hard_deadline:
            counters.set_control(STOP, 1)
            break
        time.sleep(0.1)
    if progress is not None:
        progress(_live(counters, n, started))


def _live(counters: SharedCounters, n: int, started: float) -> LiveStats:
    return LiveStats(
        requests=n,
        done=counters.total(DONE),
        completed=counters.total(OK),
        failed=counters.total(FAILED),
        elapsed_s=time.monotonic() - started,
    )


def _finish(workers) -> str | None:
    problems = []
    for process, _out, err in workers:
        try:
            code = process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            problems.append("a client process did not stop and was killed")
            continue
        if code != 0:
            problems.append(f"client process exited with status {code}: {_tail(err)}")
    return "; ".join(problems) or None


def _collect(counters: SharedCounters, workers, result: RunResult) -> None:
    histogram = new_histogram()
    for _process, out, _err in workers:
        for line in out.read_text().splitlines():
            if line.startswith("{"):
                histogram.decode_and_add(json.loads(line)["histogram"])
    result.completed = counters.total(OK)
    result.failed = counters.total(FAILED)
    result.errors = counters.errors()
    starts = [counters.slot(i, START_NS) for i in range(len(workers))]
    ends = [counters.slot(i, END_NS) for i in range(len(workers))]
    started, ended = min((s for s in starts if s), default=0), max(ends, default=0)
    result.duration_s = max(0.0, (ended - started) / 1e9) if started and ended else 0.0
    result.rps = result.completed / result.duration_s if result.duration_s else 0.0
    result.latency_ms = latency_summary(histogram)
    result.client_peak_rss_kb = counters.total(PEAK_RSS_KB)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-lines:]) or "(no output)"
