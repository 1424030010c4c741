"""`patchaudit doctor` on the command line: its options and the run."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TextIO

from .._console import add_no_color_option, isatty, terminal_width, use_color
from ._model import DEFAULT_BACKLOG, DEFAULT_CONCURRENCY, exit_code, run_checks
from ._render import render_json, render_table

# --- command line ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `patchaudit doctor`, for the main CLI's subparser."""
    parser.add_argument(
        "--concurrency",
        "-c",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"simultaneous connections planned (default {DEFAULT_CONCURRENCY}; the post went "
        "up to 10000)",
    )
    parser.add_argument(
        "--backlog",
        type=_positive_int,
        default=DEFAULT_BACKLOG,
        help=f"listen backlog of the server under test (default {DEFAULT_BACKLOG}, gevent's)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        help="new connections per second planned (without keep-alive: requests per second)",
    )
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="client and server run in one process (two descriptors per connection in it)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_no_color_option(parser)


def run_doctor(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    """Run every check, print the report, return 0 (no WARN/FAIL) or 1."""
    out = sys.stdout if stream is None else stream
    rate = getattr(args, "rate", None)
    results = run_checks(
        args.concurrency,
        args.backlog,
        rate=rate,
        same_process=getattr(args, "same_process", False),
    )
    if args.format == "json":
        text = render_json(results, concurrency=args.concurrency, backlog=args.backlog, rate=rate)
    else:
        text = render_table(
            results,
            concurrency=args.concurrency,
            backlog=args.backlog,
            rate=rate,
            color=use_color(out, getattr(args, "no_color", False)),
            width=terminal_width(out, 100),  # 100 off a terminal: reproducible output
            wrap=isatty(out),
        )
    out.write(text)
    out.flush()
    return exit_code(results)
