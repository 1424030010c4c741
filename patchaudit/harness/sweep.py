"""The sweep: every server x every concurrency (or rate) x every engine (x both keep-alive modes
with ``--keep-alive both``), each run on a fresh server.

A fresh server per run, with its pool sized to the run's concurrency, is what the post did
(``server.py gevent|threaded CONCURRENCY``). Ctrl-C or SIGTERM stops the current run, keeps what
it measured, and still stops the server (with a short grace: the user is waiting) before
returning. A second signal is :func:`patchaudit._process.interruptible`'s: it kills every child
at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

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
    #: Open model (--rate): the sweep's points are these requests per second, and the one
    #: concurrency is the cap on connections in flight. None: closed model.
    rates: list[float] | None = None
    #: --keep-alive both: every point runs without, then with keep-alive.
    keep_alive_both: bool = False

    @property
    def keep_alive_modes(self) -> list[bool]:
        return [False, True] if self.keep_alive_both else [self.keep_alive]

    def points(self) -> list[tuple[int, float | None]]:
        """(concurrency, rate) of each point: the concurrencies, or the rates at the one cap."""
        if self.rates:
            return [(self.concurrencies[0], rate) for rate in self.rates]
        return [(concurrency, None) for concurrency in self.concurrencies]


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

    def run_started(
        self,
        server: str,
        engine: str,
        concurrency: int,
        port: int,
        *,
        keep_alive: bool | None = None,
        rate: float | None = None,
    ) -> None:
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
            for concurrency, rate in options.points():
                for engine in options.engines:
                    for keep_alive in options.keep_alive_modes:
                        point = replace(
                            options,
                            keep_alive=keep_alive,
                            keep_alive_both=False,
                            rates=None if rate is None else [rate],
                        )
                        result = _one_run(
                            point, kind, concurrency, engine, server_cpus, client_cpus, reporter
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
    """One run on a fresh server; raises LoadInterrupted (with its partial result) if stopped.

    ``options`` is the run's own: its ``keep_alive``, and its one rate in ``rates`` (open model).
    """
    mode = SERVER_MODES[kind]
    rate = options.rates[0] if options.rates else None

    def unmeasured(error: str) -> RunResult:
        result = RunResult(kind, mode, engine, concurrency, options.requests, options.keep_alive)
        if rate is not None:
            result.model, result.target_rate = "open", rate
        result.error = error
        return result

    def interrupted(exc: BaseException) -> LoadInterrupted:
        return LoadInterrupted(unmeasured("interrupted"), signal_of(exc))

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
        return unmeasured(f"{kind} server failed to start: {exc}")
    except (KeyboardInterrupt, Interrupted) as exc:  # spawn_server stopped what it started
        raise interrupted(exc) from None
    grace = options.grace
    result: RunResult | None = None
    try:
        reporter.run_started(
            kind, engine, concurrency, server.port, keep_alive=options.keep_alive, rate=rate
        )
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
    # every engine takes the run's target and bounds in this order
    run = (host, port, options.path, options.requests, concurrency, options.keep_alive)
    if engine == "ab":
        return run_ab(*run, options.timeout, **common)
    if engine == "wrk":
        return run_wrk(*run, options.timeout, **common)
    if engine == "locust":
        return run_locust(
            *run,
            options.timeout,
            workers_local=options.workers_local,
            expect_workers=options.expect_workers,
            master_bind=options.master_bind,
            announce=options.announce,
            **common,
        )
    rate = options.rates[0] if options.rates else None
    return run_load(*run, options.timeout, options.processes, progress, rate=rate, **common)
