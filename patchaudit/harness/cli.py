"""Arguments and the command itself: ``add_bench_arguments(parser)``, ``run_bench(args)``.

Exit codes: 0 all runs completed, 1 a run failed entirely (its server did not start, or no
request succeeded), 2 a usage error (one line on stderr), 130 Ctrl-C and 143 SIGTERM (after the
partial results). Nothing raises a traceback at the user; ``--debug`` on the namespace adds it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from .._process import Interrupted, interruptible, kill_all
from ._children import scratch_folder
from .engines import EngineMissing, find_engine
from .limits import ephemeral_ports, fd_problem, raise_nofile
from .servers import SERVER_MODES, SERVER_PACKAGES
from .stats import LiveStats, RunResult
from .sweep import SweepOptions, SweepReporter, run_sweep

# Interrupted: 128 + the signal, so 130 for Ctrl-C (EXIT_INTERRUPTED) and 143 for SIGTERM.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ENGINES = ("builtin", "ab", "wrk")
DEFAULT_SERVERS = "gevent,threaded"
DEFAULT_CONCURRENCY = "10,100,1000,5000,10000"  # the seed's range
DEFAULT_REQUESTS = 100_000
QUICK = {"concurrency": "10,100,1000", "requests": 2_000, "max_time": 10.0}
PROG = "patchaudit bench"


class BenchUsageError(Exception):
    """What the user asked for cannot be run; one line, exit 2."""


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app",
        nargs="?",
        help="WSGI app to serve: pkg.module[:callable], module:factory() or file.py[:callable] "
        "(default: the static demo page of the 2010 Mixpanel post)",
    )
    parser.add_argument(
        "--servers",
        default=DEFAULT_SERVERS,
        help=f"comma-separated, from {', '.join(SERVER_MODES)} (default: {DEFAULT_SERVERS})",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        help=f"comma-separated connection counts (default: {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "-n", "--requests", type=int, help=f"requests per run (default: {DEFAULT_REQUESTS:,})"
    )
    parser.add_argument(
        "-k",
        "--keep-alive",
        action="store_true",
        help="reuse connections (default: a new connection per request, like ab without -k)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds one request may take (default 30)"
    )
    parser.add_argument(
        "--max-time", type=float, help="wall-clock limit of one run in seconds (default 300)"
    )
    parser.add_argument(
        "--engine",
        default="builtin",
        help="load generator: builtin, ab or wrk; comma-separated to compare (default builtin)",
    )
    parser.add_argument("--processes", type=int, help="client processes (default: one per core)")
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes of gunicorn-* and gevent-multi (default: one per core)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to the first half of the CPUs and the client to the rest",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="fixed server port (default: an ephemeral port)"
    )
    parser.add_argument(
        "--backlog", type=int, help="listen backlog (default: each server's own default)"
    )
    parser.add_argument("--path", default="/", help="request path (default /)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a small sweep: -c {QUICK['concurrency']} -n {QUICK['requests']:,} "
        f"--max-time {QUICK['max_time']:g}",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("-o", "--output", type=Path, help="write the results to FILE")
    parser.add_argument("--plot", type=Path, help="draw req/s and failures to FILE.png or .svg")
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds a server gets to stop before it is killed (default 5)",
    )
    if not any("--no-color" in action.option_strings for action in parser._actions):
        parser.add_argument("--no-color", action="store_true", help="never use colour")


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchUsageError(f"{option} takes comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise BenchUsageError(f"{option} values must be at least 1")
    return values


def _names(text: str, known, what: str, option: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in known:
            raise BenchUsageError(f"unknown {what} {name!r} (choose from {', '.join(known)})")
    if not names:
        raise BenchUsageError(f"{option} needs at least one name")
    return list(dict.fromkeys(names))


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    """Validate the arguments; raise BenchUsageError with one line if they cannot be run."""
    quick = getattr(args, "quick", False)
    defaults = QUICK if quick else {
        "concurrency": DEFAULT_CONCURRENCY, "requests": DEFAULT_REQUESTS, "max_time": 300.0
    }  # fmt: skip
    concurrency = defaults["concurrency"] if args.concurrency is None else args.concurrency
    requests = defaults["requests"] if args.requests is None else args.requests
    max_time = defaults["max_time"] if args.max_time is None else args.max_time
    concurrencies = _int_list(concurrency, "--concurrency")
    servers = _names(args.servers, SERVER_MODES, "server", "--servers")
    engines = _names(args.engine, ENGINES, "engine", "--engine")
    if requests < 1:
        raise BenchUsageError("-n/--requests must be at least 1")
    if requests < max(concurrencies):
        raise BenchUsageError(
            f"-n {requests} is less than the concurrency {max(concurrencies)}: "
            "every connection needs at least one request"
        )
    for name in ("timeout", "max_time", "grace"):
        value = max_time if name == "max_time" else getattr(args, name)
        if value <= 0:
            raise BenchUsageError(f"--{name.replace('_', '-')} must be a positive number")
    for name in ("processes", "workers", "backlog"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BenchUsageError(f"--{name} must be at least 1")
    if not 0 <= args.port <= 65535:
        raise BenchUsageError("--port must be between 0 and 65535")
    if not args.path.startswith("/"):
        raise BenchUsageError("--path must start with /")
    return SweepOptions(
        servers=servers,
        concurrencies=concurrencies,
        requests=requests,
        app=args.app,
        engines=engines,
        keep_alive=args.keep_alive,
        timeout=args.timeout,
        max_time=max_time,
        processes=args.processes,
        workers=args.workers,
        pin=args.pin,
        port=args.port,
        backlog=args.backlog,
        path=args.path,
        grace=args.grace,
    )


def preflight(options: SweepOptions, plot_path: Path | None) -> list[str]:
    """Refuse what cannot work before starting anything; return warnings worth printing."""
    for server in options.servers:
        package = SERVER_PACKAGES[server]
        if importlib.util.find_spec(package) is None:
            raise BenchUsageError(
                f"server {server} needs {package}, which is not installed: "
                "`pip install 'patchaudit[harness]'`"
            )
    for engine in options.engines:
        if engine == "builtin":
            if importlib.util.find_spec("hdrh") is None:
                raise BenchUsageError(
                    "the built-in client needs hdrhistogram: `pip install 'patchaudit[harness]'`"
                )
        else:
            try:
                find_engine(engine)
            except EngineMissing as exc:
                raise BenchUsageError(str(exc)) from None
    if plot_path is not None:
        from .results import check_plot_path

        problem = check_plot_path(plot_path)
        if problem:
            raise BenchUsageError(problem)
    raise_nofile()
    problem = fd_problem(max(options.concurrencies))
    if problem:
        raise BenchUsageError(problem)
    warnings = []
    ports = ephemeral_ports()
    if ports and not options.keep_alive and max(options.concurrencies) > ports:
        warnings.append(
            f"only {ports} local ports: a concurrency above that cannot connect "
            "(widen net.ipv4.ip_local_port_range)"
        )
    return warnings


class _Reporter(SweepReporter):
    """Live progress on stderr: a rich bar on a terminal, one line per run elsewhere."""

    def __init__(self, console, options: SweepOptions) -> None:
        self.console = console
        self.options = options
        self.bar = None
        self.task = None
        self.total: int | None = None
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rps]:>8,.0f} req/s"),
                TextColumn("[red]{task.fields[failed]:,} failed"),
                TimeElapsedColumn(),
                console=console,
            )
            self.bar.start()

    def run_started(self, server: str, engine: str, concurrency: int, port: int) -> None:
        mode = SERVER_MODES[server]
        line = (
            f"{PROG}: {server} ({mode}) on 127.0.0.1:{port}, c={concurrency:,}, "
            f"n={self.options.requests:,}, engine {engine}, "
            f"keep-alive {'on' if self.options.keep_alive else 'off'}"
        )
        if self.bar is not None:
            self.bar.console.print(line, highlight=False, markup=False)
            total = self.total = self.options.requests if engine == "builtin" else None
            self.task = self.bar.add_task(
                f"{server} c={concurrency:,} ({engine})", total=total, rps=0.0, failed=0
            )
        else:
            print(line, file=sys.stderr, flush=True)

    def progress(self, live: LiveStats) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=live.done, rps=live.rps, failed=live.failed)

    def run_finished(self, result: RunResult) -> None:
        if self.bar is not None and self.task is not None:
            done = result.completed + result.failed
            total = self.total  # None for ab/wrk: they report only at the end
            self.bar.update(
                self.task,
                completed=done,
                total=total if total is not None else max(done, 1),
                rps=result.rps,
                failed=result.failed,
            )
            self.task = None
        summary = (
            f"{PROG}: {result.server} c={result.concurrency:,}: {result.rps:,.0f} req/s, "
            f"{result.failed:,} failed of {result.requests:,}"
        )
        if result.error:
            summary += f" ({result.error.splitlines()[0]})"
        if self.bar is None:
            print(summary, file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_bench(args: argparse.Namespace) -> int:
    """The command: SIGINT and SIGTERM stop it in order (exit 130 and 143, partial results
    printed); a second one kills every child and exits at once. No child outlives it."""
    with interruptible():
        try:
            return _run_bench(args)
        except BenchUsageError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Interrupted as exc:  # before the sweep started or while printing its results
            print(f"{PROG}: {exc}", file=sys.stderr)
            return exc.exit_code
        except Exception as exc:  # never a traceback at the user
            if getattr(args, "debug", False):
                import traceback

                traceback.print_exc()
            print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            # Whatever an exception cut short (a signal inside a cleanup, say) is ended here.
            kill_all()


def _run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    options = options_from_args(args)
    for warning in preflight(options, args.plot):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    no_color = getattr(args, "no_color", False) or bool(os.environ.get("NO_COLOR"))
    err_console = Console(stderr=True, no_color=no_color, highlight=False)
    with scratch_folder("bench"):
        reporter = _Reporter(err_console, options)
        try:
            sweep = run_sweep(options, reporter)
        finally:
            reporter.stop()
    _write_results(args, sweep.runs, no_color)
    for run in sweep.runs:
        if run.error and run.error != "interrupted":
            print(f"{PROG}: {run.server} c={run.concurrency}: {run.error}", file=sys.stderr)
    if args.plot is not None and sweep.runs:
        from .results import PlotUnavailable, plot

        try:
            plot(sweep.runs, args.plot)
        except PlotUnavailable as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"{PROG}: error: cannot write {args.plot}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    if sweep.interrupted_by is not None:
        reason = Interrupted(sweep.interrupted_by)
        print(f"{PROG}: {reason}: partial results above", file=sys.stderr)
        return reason.exit_code
    if any(run.failed_entirely or run.completed == 0 for run in sweep.runs):
        return EXIT_FAILED
    return EXIT_OK


def _write_results(args: argparse.Namespace, runs: list[RunResult], no_color: bool) -> None:
    from rich.console import Console

    from .results import render_table, to_document

    stream = sys.stdout
    if args.output is not None:
        try:
            stream = open(args.output, "w", encoding="utf-8")
        except OSError as exc:
            raise BenchUsageError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        if args.format == "json":
            json.dump(to_document(runs), stream, indent=2)
            stream.write("\n")
        else:
            # Off a terminal rich would wrap at 80 columns; a file or a pipe can take more.
            wide = stream is not sys.stdout or not stream.isatty()
            console = Console(
                file=stream,
                no_color=no_color or stream is not sys.stdout,
                width=160 if wide else None,
            )
            render_table(runs, console)
        stream.flush()
    finally:
        if stream is not sys.stdout:
            stream.close()
