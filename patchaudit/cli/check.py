"""`patchaudit check [PATH ...]`: the static analyzer, for CI and pre-commit.

The model always comes from the whole project root; PATHs choose what is reported (pre-commit
passes the staged files): the files named and the files under the folders named.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._console import EXIT_OK, EXIT_USAGE, StatusLine, UsageError
from ._report import add_report_options, exit_code, overrides, write_report

HELP = "static analysis of Python files (fast; for CI and pre-commit)"
INTERRUPTIBLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="files or folders to report on (default: .); the model spans the whole project",
    )
    add_report_options(parser)
    parser.add_argument(
        "--entry-point",
        action="append",
        dest="entry_points",
        help="module name or path glob of an entry point (repeatable)",
    )
    parser.add_argument(
        "--framework",
        choices=("auto", "gevent", "eventlet"),
        help="treat the code as running under this framework",
    )
    parser.add_argument(
        "--show-programs",
        action="store_true",
        help="list the programs found (entry, launcher, frameworks) instead of the findings",
    )
    parser.add_argument("--jobs", "-j", type=int, help="worker processes (default: all cores)")
    parser.add_argument(
        "--max-file-size",
        metavar="SIZE",
        help='skip files bigger than this, e.g. 4194304 or "8MiB" (default: 4MiB)',
    )


def run(args: argparse.Namespace) -> int:
    from .._config import load_config
    from ..rules import REGISTRY
    from ..static import check

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.debug:  # also the cache's "ignoring a damaged file" lines, workers included
        os.environ.setdefault("PATCHAUDIT_DEBUG", "1")
    cwd = Path.cwd()
    paths = args.paths or [Path(".")]
    config = load_config(paths, REGISTRY.keys(), overrides(args), config_file=args.config)
    status = StatusLine(delay=float(os.environ.get("PATCHAUDIT_PROGRESS_DELAY", "2")))
    try:
        report = check(
            paths,
            config,
            cwd=cwd,
            use_cache=not args.no_cache,
            jobs=args.jobs,
            progress=lambda text: status.update(f"patchaudit check: {text}"),
        )
    finally:
        status.close()
    if args.show_programs:
        _show_programs(report.programs, as_json=args.format == "json")
        return EXIT_OK
    write_report(args, report, cwd)
    if report.files_seen == 0:
        print("patchaudit: no Python files found", file=sys.stderr)
        return EXIT_OK
    if report.files_failed and report.files_failed >= report.files_seen:
        print("patchaudit: error: none of the files could be read", file=sys.stderr)
        return EXIT_USAGE
    return exit_code(config, report)


def _show_programs(programs: list[dict[str, object]], *, as_json: bool) -> None:
    """One line a program: why a finding applies there (its launcher and what it runs under)."""
    if as_json:
        from ..reporters._json import dumps

        sys.stdout.write(dumps({"programs": programs}))
        return
    if not programs:
        print("no programs found (nothing mentions gevent or eventlet)")
    for program in programs:
        frameworks = ", ".join(program["frameworks"]) or "no framework"  # type: ignore[arg-type]
        where = f" ({program['declared_at']})" if program["declared_at"] else ""
        print(f"{program['entry']}: {program['kind']}, {frameworks}: {program['launcher']}{where}")
