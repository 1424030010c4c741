"""Command line: `patchaudit check [PATH ...]` and `patchaudit rules [CODE]`.

Exit codes follow ruff/flake8/bandit: 0 nothing at or above ``--fail-on``, 1 findings, 2 usage or
configuration errors or nothing could be analysed; 130/143 when Ctrl-C/SIGTERM stopped it. Every
failure is one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from ._version import __version__

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
COMMANDS = ("check", "audit", "rules", "matrix", "doctor", "bench", "demo")


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="patchaudit", description="Audit gevent/eventlet monkey-patching.")
    parser.add_argument("--version", action="version", version=f"patchaudit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser(
        "check", help="static analysis of Python files (fast; for CI and pre-commit)"
    )
    check.add_argument("paths", nargs="*", type=Path, help="files or folders (default: .)")
    _add_report_options(check)
    check.add_argument(
        "--entry-point",
        action="append",
        dest="entry_points",
        help="module name or path glob of an entry point (repeatable)",
    )
    check.add_argument(
        "--framework",
        choices=("auto", "gevent", "eventlet"),
        help="treat the code as running under this framework",
    )
    check.add_argument("--jobs", "-j", type=int, help="worker processes (default: all cores)")
    check.add_argument(
        "--max-file-size",
        metavar="SIZE",
        help='skip files bigger than this, e.g. 4194304 or "8MiB" (default: 4MiB)',
    )

    audit = sub.add_parser(
        "audit",
        help="import the app in a child process the way its server would, and audit it "
        "(also: `patchaudit TARGET`)",
    )
    audit.add_argument(
        "target", help="pkg.module[:callable], pkg.module:factory() or path/to/file.py[:callable]"
    )
    audit.add_argument(
        "--mode",
        choices=("auto", "as-is", "gunicorn", "gunicorn-preload", "uwsgi"),
        default="auto",
        help="how the server loads the app (default: auto)",
    )
    audit.add_argument(
        "--chdir",
        type=Path,
        default=Path("."),
        help="change to this folder first, as gunicorn does",
    )
    audit.add_argument(
        "--pythonpath",
        action="append",
        default=[],
        help="comma-separated folders to put on sys.path (repeatable)",
    )
    audit.add_argument(
        "--python", help="audit inside this interpreter (the app's own venv); it needs gevent"
    )
    audit.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds before the child is killed (default 60)",
    )
    audit.add_argument(
        "--path",
        action="append",
        dest="request_paths",
        help="request path to probe (repeatable; default /)",
    )
    audit.add_argument("--requests", type=int, default=20, help="requests per path (default 20)")
    audit.add_argument("--concurrency", type=int, default=10, help="parallel requests (default 10)")
    audit.add_argument(
        "--max-blocking",
        type=float,
        default=0.1,
        help="hub block threshold in seconds (default 0.1)",
    )
    audit.add_argument(
        "--gunicorn-config",
        type=Path,
        help="gunicorn config to honour (default: ./gunicorn.conf.py)",
    )
    audit.add_argument(
        "--no-static", action="store_true", help="skip the static analysis of the project folder"
    )
    _add_report_options(audit)

    # The harness commands pull in more modules; only the selected one is built in full, so
    # `patchaudit check` does not pay for them on every run.
    doctor = sub.add_parser(
        "doctor", help="check this machine's limits and TCP settings for load testing"
    )
    demo = sub.add_parser("demo", help="serve each broken demo app next to its fix, same load")
    bench = sub.add_parser(
        "bench", help="serve one page patched and unpatched and load it (the seed's experiment)"
    )
    if selected in (None, "bench"):
        from .harness import add_bench_arguments

        add_bench_arguments(bench)
    if selected in (None, "doctor"):
        from .doctor import add_doctor_arguments

        add_doctor_arguments(doctor)
    if selected in (None, "demo"):
        from .harness.demo import add_demo_arguments

        add_demo_arguments(demo)

    matrix = sub.add_parser(
        "matrix", help="what the installed gevent patches, and what it does not"
    )
    matrix.add_argument("--format", choices=("table", "md", "json"), default="table")
    matrix.add_argument("--no-color", action="store_true")

    rules = sub.add_parser("rules", help="list the rules, or explain one")
    rules.add_argument("code", nargs="?", help="a rule code such as MPA101, or its name")
    rules.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    return parser


def _add_report_options(parser: argparse.ArgumentParser) -> None:
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
        "--config", type=Path, help="read settings from this file instead of pyproject.toml"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write .patchaudit_cache"
    )
    parser.add_argument(
        "--no-color", action="store_true", help="never use colour (NO_COLOR is honoured too)"
    )


def _with_command(args: list[str]) -> list[str]:
    """`patchaudit myapp.wsgi` means `patchaudit audit myapp.wsgi`."""
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            if arg in ("--version", "-h", "--help"):
                return args
            continue
        if arg not in COMMANDS:
            return [*args[:index], "audit", *args[index:]]
        return args
    return args


def _selected(args: list[str]) -> str | None:
    """The command named on the line, if any (no `--help`: then every parser is built)."""
    if "-h" in args or "--help" in args:
        return None
    return next((a for a in args if a in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = _with_command(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args_list
    try:
        args = _build_parser(_selected(args_list)).parse_args(args_list)
        if args.command is None:
            raise UsageError(
                "missing command: use `patchaudit TARGET`, `patchaudit check [PATH ...]`, "
                "`patchaudit rules` or `patchaudit matrix`"
            )
        if args.command == "rules":
            return _rules_command(args, sys.stdout)
        from . import _process

        # Every command from here on starts children: what they detach is re-parented to us.
        _process.become_subreaper()
        if args.command == "matrix":
            return _matrix_command(args)
        if args.command == "bench":
            from .harness import run_bench

            return run_bench(args)
        if args.command == "demo":
            from .harness.demo import run_demo

            return run_demo(args)
        if args.command == "doctor":
            from .doctor import run_doctor

            return run_doctor(args)
        if args.command == "audit":
            return _interruptible(_audit_command, args)
        return _interruptible(_check_command, args)
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
        from ._gevent_patches import PatchListError
        from .runtime import ProbeError, TargetError

        if isinstance(
            exc,
            UsageError | ConfigError | DiscoveryError | TargetError | ProbeError | PatchListError,
        ):
            print(f"patchaudit: error: {exc}", file=sys.stderr)
        else:
            print(
                f"patchaudit: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
                "and report it)",
                file=sys.stderr,
            )
        return EXIT_USAGE
    except BaseException as exc:  # SIGINT/SIGTERM of a command that reports them itself
        from ._process import Interrupted

        if not isinstance(exc, Interrupted):
            raise
        print(f"patchaudit: {exc}", file=sys.stderr)
        return exc.exit_code


def _interruptible(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``command`` so that SIGINT/SIGTERM end it with 130/143 and one line, no traceback.

    The audit handles the interrupt itself (it reports what it gathered); anywhere else the
    command just stops. Either way no child, pool worker or scratch folder is left behind, and
    the process then exits at once, without the interpreter's shutdown (a second signal during
    that shutdown would kill it by the signal). A second signal before that also exits at once
    (see :func:`patchaudit._process.interruptible`).
    """
    from . import _process, _scratch

    with _process.interruptible(stop_workers=True):
        try:
            code = command(args)
        except BaseException as exc:
            interrupted = _process.interruption(exc)
            if interrupted is None:
                raise
            print(f"patchaudit: {interrupted}", file=sys.stderr)
            code = interrupted.exit_code
        finally:
            _process.kill_all()
            _scratch.remove_all()
        if _process.interruption() is not None:
            _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "select": _split(args.select),
        "extend-select": _split(args.extend_select),
        "ignore": _split(args.ignore),
        "exclude": _split(args.exclude),
        "extend-exclude": _split(args.extend_exclude),
        "fail-on": args.fail_on,
        "entry-points": getattr(args, "entry_points", None),
        "framework": getattr(args, "framework", None),
        "max-file-size": getattr(args, "max_file_size", None),
    }


def _check_command(args: argparse.Namespace) -> int:
    from ._config import load_config
    from .rules import REGISTRY
    from .static import check

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.debug:  # also the cache's "ignoring a damaged file" lines, workers included
        os.environ.setdefault("PATCHAUDIT_DEBUG", "1")
    cwd = Path.cwd()
    paths = args.paths or [Path(".")]
    config = load_config(paths, REGISTRY.keys(), _overrides(args), config_file=args.config)
    report = check(paths, config, cwd=cwd, use_cache=not args.no_cache, jobs=args.jobs)
    _write_report(args, report, cwd)
    if report.files_seen == 0:
        print("patchaudit: no Python files found", file=sys.stderr)
        return EXIT_OK
    if report.files_failed and report.files_failed >= report.files_seen:
        print("patchaudit: error: none of the files could be read", file=sys.stderr)
        return EXIT_USAGE
    return _exit_code(config, report)


def _audit_command(args: argparse.Namespace) -> int:
    from ._config import load_config
    from .rules import REGISTRY
    from .runtime import AuditOptions, audit

    for name in ("requests", "concurrency"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1")
    for name in ("timeout", "max_blocking"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    chdir = args.chdir
    if not chdir.is_dir():
        raise UsageError(f"--chdir folder not found: {chdir}")
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
    config = load_config([chdir], REGISTRY.keys(), _overrides(args), config_file=args.config)
    result = audit(options, config, cwd=cwd, use_cache=not args.no_cache)
    _write_report(args, result.report, cwd)
    if result.interrupted is not None:  # the report says so and what it is missing
        return result.interrupted.exit_code
    if result.target_failed:
        for problem in result.report.errors:
            print(f"patchaudit: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return _exit_code(config, result.report)


def _exit_code(config, report) -> int:
    if config.fail_on is not None and report.worst_at_or_above(config.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


def _write_report(args: argparse.Namespace, report, cwd: Path) -> None:
    from .reporters import make_reporter
    from .rules import REGISTRY

    stream: TextIO
    if args.output is not None:
        from ._safeio import NotRegularFileError, open_output

        try:
            # Never through a symlink, never into a FIFO or device (it may sit in the tree).
            stream = open(open_output(args.output), "w", encoding="utf-8")
        except NotRegularFileError as exc:
            raise UsageError(
                f"refusing to write {args.output}: it {exc.strerror}; name a regular file "
                "(or redirect standard output)"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        stream = sys.stdout
    is_tty = args.output is None and sys.stdout.isatty()
    color = is_tty and not args.no_color and not os.environ.get("NO_COLOR")
    fmt = args.format or ("full" if is_tty else "concise")
    for warning in report.warnings:
        print(f"patchaudit: warning: {warning}", file=sys.stderr)
    if report.interrupted:
        print(f"patchaudit: {report.interrupted}", file=sys.stderr)
    try:
        make_reporter(fmt, stream, color=color, rules=REGISTRY, cwd=cwd).report(report)
    finally:
        if stream is not sys.stdout:
            stream.close()
    if fmt in ("json", "sarif") or args.output is not None:
        for problem in report.errors:
            print(f"patchaudit: {problem}", file=sys.stderr)


def _matrix_command(args: argparse.Namespace) -> int:
    from ._matrix import main_matrix

    color = sys.stdout.isatty() and not args.no_color and not os.environ.get("NO_COLOR")
    return main_matrix(args.format, color, sys.stdout)


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
