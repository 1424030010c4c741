"""What ``check`` and the runtime audit share: their report options, the configuration
overrides they give, writing the report, and the exit code it implies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .._console import (
    EXIT_FINDINGS,
    EXIT_OK,
    UsageError,
    add_no_color_option,
    isatty,
    open_output,
)

if TYPE_CHECKING:
    from .._config import Config
    from .._findings import Report


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("full", "concise", "json", "sarif", "github"),
        help="output format (default: full on a terminal, concise otherwise)",
    )
    parser.add_argument("--output", "-o", type=Path, help="write the report to FILE")
    parser.add_argument(
        "--select", help="comma-separated codes or prefixes to enable (e.g. MPA1,MPA201)"
    )
    parser.add_argument(
        "--extend-select", help="codes or prefixes to enable on top of the configuration"
    )
    parser.add_argument("--ignore", help="codes or prefixes to disable")
    parser.add_argument("--exclude", help="comma-separated gitignore-style patterns to skip")
    parser.add_argument("--extend-exclude", help="patterns to skip on top of the configuration")
    parser.add_argument(
        "--fail-on",
        choices=("error", "warning", "info", "never"),
        help="lowest severity that makes the exit code 1 (default: warning)",
    )
    parser.add_argument(
        "--exit-zero",
        action="store_true",
        help="exit 0 even when there are findings (the same as --fail-on never)",
    )
    parser.add_argument(
        "--statistics",
        action="store_true",
        help="print how many findings each rule has (count, code, name) instead of the findings",
    )
    parser.add_argument(
        "--config", type=Path, help="read settings from this file instead of pyproject.toml"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write .patchaudit_cache"
    )
    add_no_color_option(parser)


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def overrides(args: argparse.Namespace) -> dict[str, object]:
    """The command-line settings, in the configuration's own keys (None: not given)."""
    # Every command asks for these first: a bad combination stops it before any work.
    if args.statistics and args.format in ("sarif", "github"):
        raise UsageError(f"--statistics prints a table or JSON, not --format {args.format}")
    return {
        "select": _split(args.select),
        "extend-select": _split(args.extend_select),
        "ignore": _split(args.ignore),
        "exclude": _split(args.exclude),
        "extend-exclude": _split(args.extend_exclude),
        "fail-on": "never" if args.exit_zero else args.fail_on,
        "entry-points": getattr(args, "entry_points", None),
        "framework": getattr(args, "framework", None),
        "max-file-size": getattr(args, "max_file_size", None),
    }


def exit_code(config: Config, report: Report) -> int:
    if config.fail_on is not None and report.worst_at_or_above(config.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


def write_report(args: argparse.Namespace, report: Report, cwd: Path) -> None:
    from .._console import color_allowed
    from ..reporters import make_reporter
    from ..reporters._statistics import write_statistics
    from ..rules import REGISTRY

    stream: TextIO = sys.stdout if args.output is None else open_output(args.output)
    is_tty = args.output is None and isatty(sys.stdout)
    color = is_tty and color_allowed(args.no_color)
    fmt = args.format or ("full" if is_tty else "concise")
    for warning in report.warnings:
        print(f"patchaudit: warning: {warning}", file=sys.stderr)
    if report.interrupted:
        print(f"patchaudit: {report.interrupted}", file=sys.stderr)
    try:
        if args.statistics:
            write_statistics(report, stream, REGISTRY, as_json=fmt == "json")
        else:
            make_reporter(fmt, stream, color=color, rules=REGISTRY, cwd=cwd).report(report)
    finally:
        if stream is not sys.stdout:
            stream.close()
    if fmt in ("json", "sarif") or args.output is not None:
        for problem in report.errors:
            print(f"patchaudit: {problem}", file=sys.stderr)
