"""`patchaudit audit TARGET` (or just `patchaudit TARGET`): import the app in a child process
the way its server would, and audit it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._console import EXIT_USAGE, UsageError, progress_line
from ._report import add_report_options, exit_code, overrides, write_report

if TYPE_CHECKING:
    from .._config import Config
    from ..runtime import AuditResult

HELP = (
    "import the app in a child process the way its server would, and audit it "
    "(also: `patchaudit TARGET`)"
)
INTERRUPTIBLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", help="pkg.module[:callable], pkg.module:factory() or path/to/file.py[:callable]"
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "as-is", "gunicorn", "gunicorn-preload", "uwsgi"),
        default="auto",
        help="how the server loads the app (default: auto)",
    )
    add_chdir_argument(parser, "change to this folder first, as gunicorn does")
    parser.add_argument(
        "--pythonpath",
        action="append",
        default=[],
        help="comma-separated folders to put on sys.path (repeatable)",
    )
    parser.add_argument(
        "--python", help="audit inside this interpreter (the app's own venv); it needs gevent"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds before the child is killed (default 60)",
    )
    add_serving_arguments(parser)
    parser.add_argument(
        "--gunicorn-config",
        type=Path,
        help="gunicorn config to honour (default: ./gunicorn.conf.py)",
    )
    parser.add_argument(
        "--no-static", action="store_true", help="skip the static analysis of the project folder"
    )
    add_report_options(parser)


def add_chdir_argument(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--chdir", type=Path, default=Path("."), help=text)


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """How the app is served and measured: the same for the emulated audit and `run`."""
    parser.add_argument(
        "--path",
        action="append",
        dest="request_paths",
        help="request path to probe (repeatable; default /)",
    )
    parser.add_argument("--requests", type=int, default=20, help="requests per path (default 20)")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="parallel requests (default 10)"
    )
    parser.add_argument(
        "--max-blocking",
        type=float,
        default=0.1,
        help="hub block threshold in seconds (default 0.1)",
    )


def check_serving_arguments(args: argparse.Namespace, *seconds: str) -> None:
    """One-line usage errors for the serving options, the ``seconds`` ones and ``--chdir``."""
    for name in ("requests", "concurrency"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1")
    for name in (*seconds, "max_blocking"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    if not args.chdir.is_dir():
        raise UsageError(f"--chdir folder not found: {args.chdir}")


def run(args: argparse.Namespace) -> int:
    from .._config import load_config
    from ..rules import REGISTRY
    from ..runtime import AuditOptions, audit

    check_serving_arguments(args, "timeout")
    chdir = args.chdir
    pythonpath = [Path(p) for item in args.pythonpath for p in item.split(",") if p]
    options = AuditOptions(
        target=args.target,
        mode=args.mode,
        chdir=chdir,
        pythonpath=pythonpath,
        python=args.python,
        timeout=args.timeout,
        paths=args.request_paths or ["/"],
        requests=args.requests,
        concurrency=args.concurrency,
        max_blocking=args.max_blocking,
        gunicorn_config=args.gunicorn_config,
        static=not args.no_static,
    )
    cwd = Path.cwd()
    config = load_config([chdir], REGISTRY.keys(), overrides(args), config_file=args.config)
    with progress_line("patchaudit") as progress:
        result = audit(options, config, cwd=cwd, use_cache=not args.no_cache, progress=progress)
    return finish_runtime(args, result, config, cwd)


def finish_runtime(args: argparse.Namespace, result: AuditResult, config: Config, cwd: Path) -> int:
    """The report and exit code of a runtime audit (``audit`` and ``run``): 130/143 when it
    was interrupted, 2 when the app could not be audited, else what the findings say."""
    write_report(args, result.report, cwd)
    if result.interrupted is not None:  # the report says so and what it is missing
        return result.interrupted.exit_code
    if result.target_failed:
        for problem in result.report.errors:
            print(f"patchaudit: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return exit_code(config, result.report)
