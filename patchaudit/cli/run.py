"""`patchaudit run [options] -- COMMAND [ARGS...]`: run the real launcher and audit every Python
process it starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._console import UsageError, progress_line
from ._report import add_report_options, overrides
from .audit import (
    add_chdir_argument,
    add_serving_arguments,
    check_serving_arguments,
    finish_runtime,
)

HELP = (
    "run the real command (gunicorn, celery, locust, uwsgi, a script) and audit every Python "
    "process it starts"
)
INTERRUPTIBLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "patchaudit run [options] -- COMMAND [ARGS...]"
    parser.add_argument(
        "argv",
        metavar="COMMAND",
        nargs=argparse.REMAINDER,
        help="the command, after `--` (e.g. -- gunicorn -k gevent app:app)",
    )
    add_chdir_argument(parser, "run the command in this folder (its files are the app's)")
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="most seconds the command runs; it is stopped sooner once the requests are done "
        "(default 60)",
    )
    parser.add_argument(
        "--port", type=int, help="the port to send requests to (default: the one it listens on)"
    )
    parser.add_argument(
        "--no-requests", action="store_true", help="send no requests, even if it listens"
    )
    add_serving_arguments(parser)
    parser.add_argument(
        "--no-static", action="store_true", help="skip the static analysis of the project folder"
    )
    add_report_options(parser)


def run(args: argparse.Namespace) -> int:
    from .._config import load_config
    from ..rules import REGISTRY
    from ..runtime import RunOptions, run_command
    from ..runtime._drive import DriveSettings

    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("give the command after `--`, e.g. `patchaudit run -- python app.py`")
    check_serving_arguments(args, "duration")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, not {args.port}")
    drive = None
    if not args.no_requests:
        drive = DriveSettings(
            paths=tuple(args.request_paths or ["/"]),
            requests=args.requests,
            concurrency=args.concurrency,
            request_timeout=min(10.0, args.duration / 2),
        )
    options = RunOptions(
        command=command,
        chdir=args.chdir,
        duration=args.duration,
        drive=drive,
        port=args.port,
        max_blocking=args.max_blocking,
        static=not args.no_static,
    )
    cwd = Path.cwd()
    config = load_config([args.chdir], REGISTRY.keys(), overrides(args), config_file=args.config)
    with progress_line("patchaudit run") as progress:
        result = run_command(
            options, config, cwd=cwd, use_cache=not args.no_cache, progress=progress
        )
    return finish_runtime(args, result, config, cwd)
