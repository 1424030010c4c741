"""Arguments and the command itself: ``add_bench_arguments(parser)``, ``run_bench(args)``.

Exit codes (``patchaudit._console``): 0 all runs completed, 1 a run failed entirely (its
server did not start, or no request succeeded), 2 a usage error (one line on stderr), 130 Ctrl-C
and 143 SIGTERM (after the partial results). Nothing raises a traceback at the user; ``--debug``
on the namespace adds it. Validation and preflight: ``_options``; live progress: ``_progress``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .._console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_USAGE,
    UsageError,
    add_no_color_option,
    color_allowed,
    open_output,
    print_error,
    print_internal_error,
)
from .._process import Interrupted, interruptible, kill_all
from ._children import scratch_folder
from ._options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_CAP,
    DEFAULT_REQUESTS,
    DEFAULT_SERVERS,
    QUICK,
    BenchUsageError,
    options_from_args,
    preflight,
)
from ._progress import PROG, ProgressReporter
from .servers import SERVER_MODES
from .stats import RunResult
from .sweep import run_sweep

EXIT_INTERRUPTED = EXIT_SIGINT  # and 143 for SIGTERM: 128 + the signal

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "BenchUsageError",
    "add_bench_arguments",
    "options_from_args",
    "preflight",
    "run_bench",
]


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
        nargs="?",
        const="on",
        default="off",
        metavar="on|off|both",
        help="reuse connections; `both` runs every point without and with keep-alive "
        "(default: off, a new connection per request, like ab without -k)",
    )
    parser.add_argument(
        "--rate",
        help="open model: send R requests per second on a fixed schedule, comma-separated to "
        "sweep rates (-c is then the cap on connections in flight, default "
        f"{DEFAULT_RATE_CAP}); latency is measured from each request's intended send time",
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
        help="load generator: builtin, ab, wrk or locust; comma-separated to compare "
        "(default builtin)",
    )
    parser.add_argument(
        "--workers-local",
        type=int,
        help="--engine locust: worker processes on this machine (default: one per core)",
    )
    parser.add_argument(
        "--expect-workers",
        type=int,
        help="--engine locust: workers started elsewhere to wait for (up to --timeout), "
        "besides the local ones (default 0)",
    )
    parser.add_argument(
        "--master-bind",
        metavar="HOST:PORT",
        help="--engine locust: the master's address (default 127.0.0.1 and a free port)",
    )
    parser.add_argument(
        "--print-worker-command",
        action="store_true",
        help="--engine locust: print the command that starts one more worker against each "
        "run's master, on any machine",
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
    add_no_color_option(parser)


def run_bench(args: argparse.Namespace) -> int:
    """The command: SIGINT and SIGTERM stop it in order (exit 130 and 143, partial results
    printed); a second one kills every child and exits at once. No child outlives it."""
    with interruptible():
        try:
            return _run_bench(args)
        except UsageError as exc:
            print_error(exc)
            return EXIT_USAGE
        except Interrupted as exc:  # before the sweep started or while printing its results
            print(f"{PROG}: {exc}", file=sys.stderr)
            return exc.exit_code
        except Exception as exc:  # never a traceback at the user
            print_internal_error(exc, debug=getattr(args, "debug", False))
            return EXIT_USAGE
        finally:
            # Whatever an exception cut short (a signal inside a cleanup, say) is ended here.
            kill_all()


def _run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    options = options_from_args(args)
    if getattr(args, "print_worker_command", False):
        options.announce = _announce_worker_command
    for warning in preflight(options, args.plot):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    # rich itself decides whether stderr is a terminal; the opt-outs are ours
    no_color = not color_allowed(getattr(args, "no_color", False))
    err_console = Console(stderr=True, no_color=no_color, highlight=False)
    with scratch_folder("bench"):
        reporter = ProgressReporter(err_console, options)
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
            print_error(exc)
            return EXIT_USAGE
        except OSError as exc:
            print_error(f"cannot write {args.plot}: {exc.strerror}")
            return EXIT_USAGE
    if sweep.interrupted_by is not None:
        reason = Interrupted(sweep.interrupted_by)
        print(f"{PROG}: {reason}: partial results above", file=sys.stderr)
        return reason.exit_code
    if any(run.failed_entirely or run.completed == 0 for run in sweep.runs):
        return EXIT_FAILED
    return EXIT_OK


def _announce_worker_command(command: list[str]) -> None:
    print(f"{PROG}: start another locust worker with: {shlex.join(command)}", file=sys.stderr)
    sys.stderr.flush()


def _write_results(args: argparse.Namespace, runs: list[RunResult], no_color: bool) -> None:
    from rich.console import Console

    from .results import render_table, to_document

    stream = sys.stdout if args.output is None else open_output(args.output)
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
