"""The built-in load client: one process per core, each driving its share with gevent.

Every request is raw HTTP/1.1 on a non-blocking socket with TCP_NODELAY, driven by gevent's
hub. By default each request opens a new connection, like ``ab`` without ``-k``; ``--timeout``
bounds each whole request (connect, send, full response). A response counts only if its status
is 2xx/3xx and its whole body arrived (Content-Length, chunked, or until close).

With ``rate`` the client is an open model (wrk2's): it sends ``rate`` requests per second on a
fixed schedule whatever the server does, spread over its processes, with ``c`` the cap on
connections in flight, and measures each latency from the request's intended send time; without
it, a closed model (a connection waits for its answer before sending the next request).

``run_load`` starts the processes (``_worker.py``), releases them together, reads their shared
counters live for the progress bar, and merges their histograms when they are done. Each process
runs under a supervisor (:func:`patchaudit._process.spawn`) in its own process group, so it dies
with us however we die; Ctrl-C or SIGTERM here stops them in order and keeps what they measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import IO

from .._process import Child, Interrupted, spawn
from ._children import python_command
from .stats import (
    CPU_US,
    DONE,
    END_NS,
    FAILED,
    GO,
    LATE,
    OK,
    PEAK_RSS_KB,
    START_NS,
    STATE,
    STATE_READY,
    STOP,
    WALL_US,
    LiveStats,
    RunResult,
    SharedCounters,
    client_cpu,
    latency_summary,
    new_histogram,
)

Progress = Callable[[LiveStats], None]
Worker = tuple[Child, IO[bytes], IO[bytes]]  # the process, its stdout and its stderr

# Seconds the client processes get to report after being told to stop when the user is waiting
# (Ctrl-C, SIGTERM): they stop at their next monitor tick (0.1 s), so this is ample.
INTERRUPT_GRACE = 1.0
START_TIMEOUT = 60.0  # for every client process to be ready
STOP_SLACK = 15.0  # after --max-time, before the parent stops a process that did not stop itself


class ClientError(Exception):
    """The client processes could not run; the run's ``error`` says why."""


class LoadInterrupted(Exception):
    """Ctrl-C or SIGTERM during a run; ``result`` holds what was measured until then and
    ``signum`` which signal it was (SIGINT for a plain ``KeyboardInterrupt``)."""

    def __init__(self, result: RunResult, signum: int = signal.SIGINT) -> None:
        super().__init__("interrupted")
        self.result = result
        self.signum = signum


def signal_of(exc: BaseException) -> int:
    """The signal behind an interruption: :class:`Interrupted` knows, Ctrl-C is SIGINT."""
    return exc.signum if isinstance(exc, Interrupted | LoadInterrupted) else signal.SIGINT


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
    rate: float | None = None,
) -> RunResult:
    """Send ``n`` GET requests with ``c`` connections in flight; stop after ``max_time`` s.

    ``rate``: requests per second on a fixed schedule (open model), ``c`` then being the most
    in flight; None for the closed model. Raises LoadInterrupted (carrying the partial result)
    on Ctrl-C or SIGTERM.
    """
    from .servers import check_loopback

    check_loopback(host)
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be a positive number, not {rate!r}")
    processes = max(1, min(processes or default_processes(), c, n))
    counters = SharedCounters(processes)
    result = RunResult(server, mode, "builtin", c, n, keep_alive, port=port)
    workers: list[Worker] = []
    interrupted: BaseException | None = None
    try:
        try:
            for index, (share_n, share_c) in enumerate(
                zip(_split(n, processes), _split(c, processes), strict=True)
            ):
                config = {
                    "counters_fd": counters.fd,
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
                    "cpus": sorted(cpus) if cpus else None,
                    # Each process sends rate/processes per second, shifted by its index so
                    # that together they send one request every 1/rate seconds.
                    "rate": rate / processes if rate else None,
                    "offset_ns": int(index * 1e9 / rate) if rate else 0,
                }
                workers.append(_spawn_worker(config, counters.fd, max_time))
            _wait_state(counters, workers, STATE_READY, timeout=START_TIMEOUT)
            counters.set_control(GO, time.monotonic_ns())
            _watch(counters, workers, n, max_time, progress)
        except (KeyboardInterrupt, Interrupted) as exc:
            interrupted = exc
        try:
            _stop_and_collect(counters, workers, result, interrupted is not None, rate, cpus)
        except (KeyboardInterrupt, Interrupted) as exc:  # while collecting: again, quickly
            interrupted = exc
            _stop_and_collect(counters, workers, result, True, rate, cpus)
    except ClientError as exc:
        result.error = str(exc)
    finally:
        for child, out, err in workers:
            _end(child)
            out.close()
            err.close()
        counters.close()
    if interrupted is not None:
        result.error = "interrupted"
        raise LoadInterrupted(result, signal_of(interrupted)) from None
    if result.error is None and result.completed + result.failed < n:
        result.error = f"stopped by --max-time ({max_time:g}s) after {result.completed:,} requests"
    return result


def _stop_and_collect(
    counters: SharedCounters,
    workers: list[Worker],
    result: RunResult,
    hurry: bool,
    rate: float | None,
    cpus: set[int] | None,
) -> None:
    """Let the workers finish (told to stop at once if ``hurry``) and fill ``result``."""
    if hurry:
        counters.set_control(STOP, 1)  # workers abandon in-flight requests and report
    problems = _finish(workers, INTERRUPT_GRACE if hurry else 10.0)
    _collect(counters, workers, result, rate, cpus)
    if problems:
        result.error = problems


def _spawn_worker(config: dict, counters_fd: int, max_time: float) -> Worker:
    # Anonymous files, not pipes: nothing can block if a worker writes more than a pipe holds,
    # and nothing is left on disk however we end.
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    try:
        child = spawn(
            [*python_command(module="patchaudit.harness._worker"), json.dumps(config)],
            stdout=out,
            stderr=err,
            pass_fds=(counters_fd,),
            # Its own bound: ready, --max-time, the parent's slack, and the report.
            deadline=START_TIMEOUT + max_time + STOP_SLACK + 10.0,
        )
    except BaseException:
        out.close()
        err.close()
        raise
    return child, out, err


def _end(child: Child) -> None:
    """Kill a worker still running; forget one that exited (its supervisor cleaned up)."""
    if child.poll() is None:
        child.kill()
    else:
        child.close()


def _wait_state(
    counters: SharedCounters, workers: list[Worker], state: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while any(counters.slot(i, STATE) < state for i in range(len(workers))):
        for child, _out, err in workers:
            if child.poll() is not None:
                raise ClientError(f"client process failed to start: {_tail(err)}")
        if time.monotonic() > deadline:
            raise ClientError(f"client processes did not start within {timeout:g}s")
        time.sleep(0.01)


def _watch(
    counters: SharedCounters,
    workers: list[Worker],
    n: int,
    max_time: float,
    progress: Progress | None,
) -> None:
    started = time.monotonic()
    hard_deadline = started + max_time + STOP_SLACK  # workers stop themselves at max_time
    while any(child.poll() is None for child, _o, _e in workers):
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


def _finish(workers: list[Worker], grace: float) -> str | None:
    """Wait up to ``grace`` seconds in all for the workers to exit; kill the ones that do not."""
    deadline = time.monotonic() + grace
    problems = []
    for child, _out, err in workers:
        try:
            code = child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            problems.append("a client process did not stop and was killed")
            continue
        if code != 0:
            problems.append(f"client process exited with status {code}: {_tail(err)}")
    return "; ".join(problems) or None


def _collect(
    counters: SharedCounters,
    workers: list[Worker],
    result: RunResult,
    rate: float | None,
    cpus: set[int] | None,
) -> None:
    histogram, service = new_histogram(), new_histogram()
    for _child, out, _err in workers:
        out.seek(0)
        for line in out.read().decode(errors="replace").splitlines():
            if line.startswith("{"):
                report = json.loads(line)
                histogram.decode_and_add(report["histogram"])
                if "service" in report:
                    service.decode_and_add(report["service"])
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
    slots = range(len(workers))
    walls = [counters.slot(i, WALL_US) / 1e6 for i in slots]
    if any(walls):  # each process reports its own CPU and wall time as it ends
        seconds = [counters.slot(i, CPU_US) / 1e6 for i in slots]
        result.client_cpu = client_cpu(seconds, max(walls), cpus=cpus)
    if rate is not None:
        result.service_ms = latency_summary(service)
        result.finish_open(rate, counters.total(LATE))


def _tail(stream: IO[bytes], lines: int = 5) -> str:
    try:
        stream.seek(0)
        text = stream.read().decode(errors="replace").strip()
    except (OSError, ValueError):  # ValueError: already closed
        return ""
    return " | ".join(text.splitlines()[-lines:]) or "(no output)"
