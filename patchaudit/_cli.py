"""Command line: `patchaudit check [PATH ...]` and `patchaudit rules [CODE]`.

Exit codes follow ruff/flake8/bandit: 0 nothing at or above ``--fail-on``, 1 findings, 2 usage or
configuration errors or nothing could be analysed. Every failure is one line on stderr;
``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ._version import __version__

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
COMMANDS = ("check", "rules")


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="patchaudit", description="Audit gevent/eventlet monkey-patching.")
    parser.add_argument("--version", action="version", version=f"patchaudit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="static analysis of Python files (fast; for CI and pre-commit)")
    check.add_argument("paths", nargs="*", type=Path, help="files or folders (default: .)")
    check.add_argument("--format", choices=("full", "concise", "json", "sarif", "github"),
                       help="output format (default: full on a terminal, concise otherwise)")
    check.add_argument("--output", "-o", type=Path, help="write the report to FILE")
    check.add_argument("--select", help="comma-separated codes or prefixes to enable (e.g. MPA1,MPA201)")
    check.add_argument("--extend-select", help="codes or prefixes to enable on top of the configuration")
    check.add_argument("--ignore", help="codes or prefixes to disable")
    check.add_argument("--exclude", help="comma-separated gitignore-style patterns to skip")
    check.add_argument("--extend-exclude", help="patterns to skip on top of the configuration")
    check.add_argument("--fail-on", choices=("error", "warning", "info", "never"),
                       help="lowest severity that makes the exit code 1 (default: warning)")
    check.add_argument("--entry-point", action="append", dest="entry_points",
                       help="module name or path glob of an entry point (repeatable)")
    check.add_argument("--framework", choices=("auto", "gevent", "eventlet"),
                       help="treat the code as running under this framework")
    check.add_argument("--config", type=Path, help="read settings from this file instead of pyproject.toml")
    check.add_argument("--no-cache", action="store_true", help="do not read or write .patchaudit_cache")
    check.add_argument("--jobs", "-j", type=int, help="worker processes (default: all cores)")
    check.add_argument("--no-color", action="store_true", help="never use colour (NO_COLOR is honoured too)")

    rules = sub.add_parser("rules", help="list the rules, or explain one")
    rules.add_argument("code", nargs="?", help="a rule code such as MPA101, or its name")
    rules.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        args = _build_parser().parse_args(args_list)
        if args.command is None:
            raise UsageError("missing command: use `patchaudit check [PATH ...]` or `patchaudit rules`")
        if args.command == "rules":
            return _rules_command(args, sys.stdout)
        return _check_command(args)
    except BrokenPipeError:
        # The reader went away (`| head`); silence the final flush as well.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("patchaudit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from ._config import ConfigError
        from .static._discover import DiscoveryError

        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, UsageError | ConfigError | DiscoveryError):
            print(f"patchaudit: error: {exc}", file=sys.stderr)
        else:
            print(f"patchaudit: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
                  "and report it)", file=sys.stderr)
        return EXIT_USAGE


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _check_command(args: argparse.Namespace) -> int:
    from ._config import load_config
    from .reporters import make_reporter
    from .rules import REGISTRY
    from .static import check

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    cwd = Path.cwd()
    paths = args.paths or [Path(".")]
    overrides = {
        "select": _split(args.select),
        "extend-select": _split(args.extend_select),
        "ignore": _split(args.ignore),
        "exclude": _split(args.exclude),
        "extend-exclude": _split(args.extend_exclude),
        "fail-on": args.fail_on,
        "entry-points": args.entry_points,
        "framework": args.framework,
    }
    config = load_config(paths, REGISTRY.keys(), overrides, config_file=args.config)
    report = check(paths, config, cwd=cwd, use_cache=not args.no_cache, jobs=args.jobs)

    stream: TextIO
    if args.output is not None:
        try:
            stream = open(args.output, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        stream = sys.stdout
    is_tty = args.output is None and sys.stdout.isatty()
    color = is_tty and not args.no_color and not os.environ.get("NO_COLOR")
    fmt = args.format or ("full" if is_tty else "concise")
    try:
        make_reporter(fmt, stream, color=color, rules=REGISTRY, cwd=cwd).report(report)
    finally:
        if stream is not sys.stdout:
            stream.close()
    for problem in report.errors:
        if fmt in ("json", "sarif") or args.output is not None:
            print(f"patchaudit: {problem}", file=sys.stderr)
    if report.files_seen == 0:
        print("patchaudit: no Python files found", file=sys.stderr)
        return EXIT_OK
    if report.files_failed and report.files_failed >= report.files_seen:
        print("patchaudit: error: none of the files could be read", file=sys.stderr)
        return EXIT_USAGE
    if config.fail_on is not None and report.worst_at_or_above(config.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


def _rules_command(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from ._docs import rule_as_dict, rule_page, rules_table
    from .rules import REGISTRY, all_rules

    if args.code is None:
        if args.format == "json":
            json.dump([rule_as_dict(r) for r in all_rules()], out, indent=2)
            out.write("\n")
        else:
            out.write(rules_table(all_rules(), markdown=args.format == "markdown"))
        return EXIT_OK
    wanted = args.code.strip()
    found = REGISTRY.get(wanted.upper()) or next(
        (r for r in REGISTRY.values() if r.name == wanted.lower()), None
    )
    if found is None:
        raise UsageError(f"unknown rule {wanted!r} (list them with `patchaudit rules`)")
    if args.format == "json":
        json.dump(rule_as_dict(found), out, indent=2)
        out.write("\n")
    else:
        out.write(rule_page(found))
    return EXIT_OK
