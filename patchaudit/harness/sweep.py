"""The sweep: every server x every concurrency x every engine, each run on a fresh server.

A fresh server per run, with its pool sized to the run's concurrency, is what the post did
(``server.py gevent|threaded CONCURRENCY``). Ctrl-C or SIGTERM stops the current run, keeps what
it measured, and still stops the server (with a short grace: the user is waiting) before
returning. A second signal is :func:`patchaudit._process.interruptible`'s: it kills every child
at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .._process import Interrupted
from ._locust import run_locust
from .client import INTERRUPT_GRACE, START_TIMEOUT, STOP_SLACK, LoadInterrupted, run_load, signal_of
from .engines import run_ab, run_wrk
from .servers import SERVER_MODES, ServerError, ServerProcess, spawn_server
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
    # --engine locust: workers here, workers expected from elsewhere, the master's address,
    # and who is told the command that starts one more worker (--print-worker-command).
    workers_local: int | None = None
    expect_workers: int = 0
    master_bind: str = "127.0.0.1"
    announce: Callable[[list[str]], None] | None = None


@dataclass
class Sweep:
    runs: list[RunResult]
    #: The signal (SIGINT, SIGTERM) that stopped the sweep early, or None.
    interrupted_by: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.interrupted_by is not None


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
    except LoadInterrupted as exc:  # the current run, with what it measured
        sweep.runs.append(exc.result)
        reporter.run_finished(exc.result)
        sweep.interrupted_by = exc.signum
    except (KeyboardInterrupt, Interrupted) as exc:  # between runs, or while reporting one
        sweep.interrupted_by = signal_of(exc)
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
    """One run on a fresh server; raises LoadInterrupted (with its partial result) if stopped."""
    mode = SERVER_MODES[kind]

    def interrupted(exc: BaseException) -> LoadInterrupted:
        result = RunResult(kind, mode, engine, concurrency, options.requests, options.keep_alive)
        result.error = "interrupted"
        return LoadInterrupted(result, signal_of(exc))

    # A fresh server per run: it never needs to outlive starting, the client's own bounds and
    # stopping. Its supervisor ends it after that, even if this process is stuck.
    lifetime = options.start_timeout + START_TIMEOUT + options.max_time + STOP_SLACK + 10.0
    if engine == "locust":  # its master waits up to --timeout for the workers first
        lifetime += options.timeout
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
            deadline=lifetime + options.grace,
        )
    except ServerError as exc:
        failed = RunResult(kind, mode, engine, concurrency, options.requests, options.keep_alive)
        failed.error = f"{kind} server failed to start: {exc}"
        return failed
    except (KeyboardInterrupt, Interrupted) as exc:  # spawn_server stopped what it started
        raise interrupted(exc) from None
    grace = options.grace
    result: RunResult | None = None
    try:
        reporter.run_started(kind, engine, concurrency, server.port)
        result = _drive(
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
    except LoadInterrupted:
        grace = min(grace, INTERRUPT_GRACE)
        raise
    except (KeyboardInterrupt, Interrupted) as exc:
        grace = min(grace, INTERRUPT_GRACE)
        raise interrupted(exc) from None
    finally:
        _stop(server, grace, result)
    return result


def _stop(server: ServerProcess, grace: float, finished: RunResult | None) -> None:
    """Stop the run's server. A signal while it stops kills it at once instead, and the run,
    if it had finished, is still kept (as the sweep's last)."""
    try:
        server.stop(grace)
    except (KeyboardInterrupt, Interrupted) as exc:
        server.child.kill()
        if finished is not None:
            raise LoadInterrupted(finished, signal_of(exc)) from None
        raise
    finally:
        server.close()


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
    if engine == "locust":
        return run_locust(
            host,
            port,
            options.path,
            options.requests,
            concurrency,
            options.keep_alive,
            options.timeout,
            workers_local=options.workers_local,
            expect_workers=options.expect_workers,
            master_bind=options.master_bind,
            announce=options.announce,
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
