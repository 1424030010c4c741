"""`patchaudit check [PATH ...]`: the static analyzer, for CI and pre-commit.

The model always comes from the whole project root; PATHs choose what is reported (pre-commit
passes the staged files): the files named and the files under the folders named.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._console import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, UsageError, progress_line
from .._findings import Report
from ._report import add_report_options, exit_code, overrides, write_report

HELP = "static analysis of Python files (fast; for CI and pre-commit)"
INTERRUPTIBLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="files or folders to report on (default: .), or - for stdin; the model spans the "
        "whole project",
    )
    add_report_options(parser)
    parser.add_argument(
        "--stdin-filename",
        type=Path,
        metavar="PATH",
        help="the path the source read from stdin is checked as (messages, configuration, "
        "per-file-ignores, module name); nothing is cached or written",
    )
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
    parser.add_argument(
        "--add-noqa",
        action="store_true",
        help="add `# noqa: CODE` to each reported line (merged with the noqa it has) and exit",
    )
    parser.add_argument(
        "--show-settings",
        action="store_true",
        help="print the resolved configuration (as a [tool.patchaudit] table) and exit",
    )
    parser.add_argument("--jobs", "-j", type=int, help="worker processes (default: all cores)")
    parser.add_argument(
        "--max-file-size",
        metavar="SIZE",
        help='skip files bigger than this, e.g. 4194304 or "8MiB" (default: 4MiB)',
    )
    _add_fix_options(parser)


def _add_fix_options(parser: argparse.ArgumentParser) -> None:
    """Fixes (docs/fixes.md): ruff's options, with ruff's meaning."""
    group = parser.add_argument_group("fixes")
    group.add_argument("--fix", action="store_true", help="apply the safe fixes, then re-check")
    group.add_argument(
        "--unsafe-fixes",
        action="store_true",
        help="with --fix, --diff or --fix-only: also the fixes that change import-time behaviour",
    )
    group.add_argument(
        "--diff",
        action="store_true",
        help="print the diff --fix would apply and change nothing (exit 1 if there is one)",
    )
    group.add_argument(
        "--fix-only",
        action="store_true",
        help="apply the fixes and print only how many were applied and how many findings remain",
    )


def run(args: argparse.Namespace) -> int:
    name = _stdin_name(args)
    if name is None:
        return _run(args, args.paths or [Path(".")], None)
    from .._scratch import scratch_dir

    data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    with scratch_dir("stdin") as folder:  # kept until the report has read its lines
        holder = folder / "stdin.py"
        holder.write_bytes(data)
        return _run(args, [name], holder)


def _stdin_name(args: argparse.Namespace) -> Path | None:
    """The name stdin's source is checked under, when it is read (`-`, or no PATH and
    --stdin-filename); None to check files."""
    given = [str(p) for p in args.paths]
    if "-" in given and len(given) > 1:
        raise UsageError("`-` (read stdin) cannot be combined with other paths")
    if given and given != ["-"]:
        if args.stdin_filename is not None:
            raise UsageError(
                "--stdin-filename names the source read from stdin: "
                "use `patchaudit check - --stdin-filename PATH`"
            )
        return None
    if not given and args.stdin_filename is None:
        return None
    for option, given_it in (
        ("--add-noqa", args.add_noqa),
        ("--fix", args.fix or args.fix_only),
        ("--diff", args.diff),
    ):
        if given_it:
            raise UsageError(f"{option} edits files; it cannot edit what stdin gives")
    name = args.stdin_filename if args.stdin_filename is not None else Path("-")
    if name.is_dir():
        raise UsageError(f"--stdin-filename must name a file, not the folder {name}")
    return name


def _run(args: argparse.Namespace, paths: list[Path], stdin: Path | None) -> int:
    from .._config import load_config
    from ..rules import REGISTRY
    from ..static import check

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.debug:  # also the cache's "ignoring a damaged file" lines, workers included
        os.environ.setdefault("PATCHAUDIT_DEBUG", "1")
    cwd = Path.cwd()
    config = load_config(paths, REGISTRY.keys(), overrides(args), config_file=args.config)
    if args.show_settings:
        from ._settings import show_settings

        show_settings(config, cwd, as_json=args.format == "json")
        return EXIT_OK

    def run_check() -> Report:
        with progress_line("patchaudit check") as progress:
            return check(
                paths,
                config,
                cwd=cwd,
                use_cache=not args.no_cache and stdin is None,
                jobs=args.jobs,
                progress=progress,
                stdin=stdin,
            )

    report = run_check()
    if args.fix or args.diff or args.fix_only:
        return _run_fixes(args, report, run_check, cwd, config)
    if not args.show_programs:
        from ..fixes import attach_fixes

        attach_fixes(report, cwd)
    if args.show_programs:
        _show_programs(report.programs, as_json=args.format == "json")
        return EXIT_OK
    if args.add_noqa:
        return _add_noqa(report, cwd)
    write_report(args, report, cwd)
    if report.files_seen == 0:
        print("patchaudit: no Python files found", file=sys.stderr)
        return EXIT_OK
    if report.files_failed and report.files_failed >= report.files_seen:
        print("patchaudit: error: none of the files could be read", file=sys.stderr)
        return EXIT_USAGE
    return exit_code(config, report)


def _add_noqa(report: Report, cwd: Path) -> int:
    from ..static._add_noqa import add_noqa

    for problem in report.errors:
        print(f"patchaudit: {problem}", file=sys.stderr)
    edits = add_noqa(report.findings, cwd, report.source_files)
    for skipped in edits.skipped:
        print(f"patchaudit: warning: not silenced: {skipped}", file=sys.stderr)
    lines = "1 line" if edits.lines == 1 else f"{edits.lines} lines"
    files = "1 file" if edits.files == 1 else f"{edits.files} files"
    print(f"added {edits.codes} `# noqa` code(s) on {lines} in {files}")
    return EXIT_OK


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


#: How many times --fix re-checks and fixes again: a fix that waited for an overlapping one gets
#: its turn, and a fix that cannot converge cannot loop for ever.
_MAX_PASSES = 10


def _run_fixes(
    args: argparse.Namespace,
    report: Report,
    run_check: Callable[[], Report],
    cwd: Path,
    config: Any,
) -> int:
    """--fix, --fix-only and --diff: fix, re-check, repeat while something changed."""
    from ..fixes import attach_fixes, fix_files

    if args.show_programs:
        raise UsageError("--show-programs cannot be combined with --fix, --diff or --fix-only")
    unsafe = args.unsafe_fixes
    attach_fixes(report, cwd)
    if args.diff:  # one pass against the files as they are: nothing is written
        result = fix_files(report, cwd, unsafe=unsafe, write=False)
        sys.stdout.write(result.diff)
        hint = _unsafe_hint(report, unsafe)
        print(f"patchaudit: would fix {result.fixed} finding(s){hint}", file=sys.stderr)
        return EXIT_FINDINGS if result.diff else EXIT_OK
    fixed, errors = 0, []
    for _ in range(_MAX_PASSES):
        result = fix_files(report, cwd, unsafe=unsafe, write=True)
        errors += result.errors
        if not result.fixed:
            break
        fixed += result.fixed
        report = run_check()  # the findings of the edited files, and the fixes that waited
        attach_fixes(report, cwd)
    for error in dict.fromkeys(errors):  # a file that cannot be written: once, not per pass
        print(f"patchaudit: error: {error}", file=sys.stderr)
    counts = f"patchaudit: fixed {fixed} finding(s), {len(report.findings)} remaining"
    counts += _unsafe_hint(report, unsafe)
    if args.fix_only:
        print(counts)
        return EXIT_USAGE if errors else EXIT_OK
    write_report(args, report, cwd)
    print(counts, file=sys.stderr)
    return EXIT_USAGE if errors else exit_code(config, report)


def _unsafe_hint(report: Report, unsafe: bool) -> str:
    """What --unsafe-fixes would add, as ruff says it: nothing when it was given."""
    from ..fixes import Applicability

    waiting = sum(
        1
        for f in report.findings
        if f.autofix is not None and f.autofix.applicability is Applicability.UNSAFE
    )
    return "" if unsafe or not waiting else f" ({waiting} more with --unsafe-fixes)"
