"""The sweep: every server x every concurrency x every engine, each run on a fresh server.

A fresh server per run, with its pool sized to the run's concurrency, is what the seed did
(``server.py gevent|threaded CONCURRENCY``). Ctrl-C stops the current run, keeps what it
measured, and still stops the server before returning.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .client import LoadInterrupted, run_load
from .engines import run_ab, run_wrk
from .servers import SERVER_MODES, ServerError, cleanup, spawn_server
from .stats import LiveStats, RunResult


@dataclass
class SweepOptions:
    servers: list[str]
    concurrencies: list[int]
    requests: int
    app: str | None = None
    engines: list[str] = field(default_factory=lambda: ["builtin"])
    keep_alive: bool = False
    timeout: float = 30.0
    max_time: float = 300.0
    processes: int | None = None
    workers: int | None = None
    pin: bool = False
    port: int = 0
    backlog: int | None = None
    path: str = "/"
    grace: float = 5.0
    start_timeout: float = 60.0
    cwd: str | None = None


@dataclass
class Sweep:
    runs: list[RunResult]
    interrupted: bool = False


class SweepReporter:
    """Hooks for the user interface; the defaults do nothing."""

    def run_started(self, server: str, engine: str, concurrency: int, port: int) -> None:
        pass

    def progress(self, live: LiveStats) -> None:
        pass

    def run_finished(self, result: RunResult) -> None:
        pass


def pin_sets() -> tuple[set[int], set[int]]:
    """--pin: the server gets the first half of the usable CPUs, the client the rest."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    half = (len(cpus) + 1) // 2
    return set(cpus[:half]), set(cpus[half:])


def run_sweep(options: SweepOptions, reporter: SweepReporter | None = None) -> Sweep:
    reporter = reporter or SweepReporter()
    server_cpus, client_cpus = pin_sets() if options.pin else (None, None)
    sweep = Sweep(runs=[])
    try:
        for kind in options.servers:
            for concurrency in options.concurrencies:
                for engine in options.engines:
                    result = _one_run(
                        options, kind, concurrency, engine, server_cpus, client_cpus, reporter
                    )
                    sweep.runs.append(result)
                    reporter.run_finished(result)
                    if result.error == "interrupted":
                        sweep.interrupted = True
                        return sweep
    except KeyboardInterrupt:
        sweep.interrupted = True
    return sweep


def _one_run(
    options: SweepOptions,
    kind: str,
    concurrency: int,
    engine: str,
    server_cpus: set[int] | None,
    client_cpus: set[int] | None,
    reporter: SweepReporter,
) -> RunResult:
    mode = SERVER_MODES[kind]
    try:
        server = spawn_server(
            kind,
            options.app,
            concurrency,
            port=options.port,
            workers=options.workers,
            backlog=options.backlog,
            cpus=server_cpus,
            cwd=options.cwd,
            start_timeout=options.start_timeout,
            path=options.path,
        )
    except ServerError as exc:
        failed = RunResult(kind, mode, engine, concurrency, options.requests, options.keep_alive)
        failed.error = f"{kind} server failed to start: {exc}"
        return failed
    try:
        reporter.run_started(kind, engine, concurrency, server.port)
        return _drive(
            options,
            engine,
            server.host,
            server.port,
            concurrency,
            kind,
            mode,
            client_cpus,
            reporter.progress,
        )
    except LoadInterrupted as exc:
        return exc.result
    except KeyboardInterrupt:
        result = RunResult(kind, mode, engine, concurrency, options.requests, options.keep_alive)
        result.error = "interrupted"
        return result
    finally:
        with _no_sigint():  # a second Ctrl-C must not leave the server running
            server.stop(options.grace)
            cleanup(server)


@contextmanager
def _no_sigint() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals (and may change handlers)
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _drive(
    options: SweepOptions,
    engine: str,
    host: str,
    port: int,
    concurrency: int,
    kind: str,
    mode: str,
    cpus: set[int] | None,
    progress: Callable[[LiveStats], None],
) -> RunResult:
    common = dict(max_time=options.max_time, cpus=cpus, server=kind, mode=mode)
    if engine == "ab":
        return run_ab(
            host,
            port,
            options.path,
            options.requests,
            concurrency,
            options.keep_alive,
            options.timeout,
            **common,
        )
    if engine == "wrk":
        return run_wrk(
            host,
            port,
            options.path,
            options.requests,
            concurrency,
            options.keep_alive,
            options.timeout,
            **common,
        )
    return run_load(
        host,
        port,
        options.path,
        options.requests,
        concurrency,
        options.keep_alive,
        options.timeout,
        options.processes,
        progress,
        **common,
    )
