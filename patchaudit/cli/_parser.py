"""The top-level parser, the command table and what the first word of the line means."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from importlib.machinery import PathFinder
from types import ModuleType

from .._console import PROG, UsageError
from .._version import __version__

# Each command is a module of this package with HELP, add_arguments(parser) and run(args).
# Listed in the order `patchaudit --help` shows them.
_MODULES = ("check", "audit", "run", "doctor", "demo", "bench", "matrix", "rules")
COMMANDS = ("check", "audit", "run", "rules", "matrix", "doctor", "bench", "demo")
USAGE = (
    f"{PROG} [-h] [--version] [--debug] TARGET [audit options]\n"
    f"       {PROG} [-h] [--version] [--debug] {{{','.join(_MODULES)}}} ..."
)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{name}")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The whole parser. Commands whose options pull in many modules (bench, doctor, demo:
    ``LAZY``) get them only when ``selected`` or for ``--help``, so ``check`` does not pay."""
    parser = Parser(prog=PROG, usage=USAGE, description="Audit gevent/eventlet monkey-patching.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for name in _MODULES:
        module = command_module(name)
        command = sub.add_parser(name, prog=f"{PROG} {name}", help=module.HELP)
        if selected in (None, name) or not getattr(module, "LAZY", False):
            module.add_arguments(command)
    return parser


def selected_command(args: list[str]) -> str | None:
    """The command named on the line, if any (no `--help`: then every parser is built)."""
    if "-h" in args or "--help" in args:
        return None
    return next((a for a in args if a in COMMANDS), None)


def with_command(args: list[str]) -> list[str]:
    """`patchaudit myapp.wsgi` means `patchaudit audit myapp.wsgi`; a near-miss of a command
    name (`patchaudit chek .`) is a usage error rather than an app to import."""
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            if arg in ("--version", "-h", "--help"):
                return args
            continue
        if arg in COMMANDS:
            return args
        close = difflib.get_close_matches(arg, COMMANDS, n=1)
        if close and not _looks_like_target(arg, _chdir(args)):
            raise UsageError(f"unknown command {arg!r}; did you mean {close[0]!r}?")
        return [*args[:index], "audit", *args[index:]]
    return args


def _chdir(args: list[str]) -> str:
    """The audit's ``--chdir`` (where it looks for the target), if given."""
    for index, arg in enumerate(args):
        if arg == "--chdir" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--chdir="):
            return arg.partition("=")[2]
    return "."


def _looks_like_target(arg: str, chdir: str) -> bool:
    """``pkg.mod:app``, ``path/to/file.py``, anything that exists where the audit would look
    for it, or a module this interpreter can import: an app, not a typo."""
    if any(mark in arg for mark in (".", ":", "/", os.sep)):
        return True
    if any(os.path.exists(os.path.join(chdir, name)) for name in (arg, f"{arg}.py")):
        return True
    # Only finds it (the finders read directories), never imports it.
    return arg.isidentifier() and PathFinder.find_spec(arg, [chdir, *sys.path]) is not None
