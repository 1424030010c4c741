"""What every command shares about the terminal and the way out: exit codes, colour, width,
``--output``, and the one-line error.

A leaf module (standard library only, nothing imported at module level from patchaudit) so the
reporters, doctor, the harness and the matrix can all use it without pulling in the rules.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# The exit codes of every command (ruff/flake8/bandit's convention). Interrupted is 128 + the
# signal: 130 for Ctrl-C, 143 for SIGTERM (``_process.Interrupted.exit_code`` computes it).
EXIT_OK = 0
EXIT_FINDINGS = 1  # findings at or above --fail-on; for bench/doctor: a run failed, a WARN/FAIL
EXIT_FAILED = EXIT_FINDINGS
EXIT_USAGE = 2  # usage or configuration errors, nothing could be analysed
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

PROG = "patchaudit"
# One spelling per format in help; the other spellings are accepted too.
FORMAT_ALIASES = {"md": "markdown"}


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line by :func:`print_error`,
    exit 2."""


def print_error(message: object) -> None:
    """The one way a usage or configuration error reaches the user."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def print_internal_error(exc: BaseException, *, debug: bool) -> None:
    """A bug of ours: one line (the traceback too with ``--debug``), never only a traceback."""
    if debug:
        import traceback

        traceback.print_exception(exc)
    print(
        f"{PROG}: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
        file=sys.stderr,
    )


def isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def color_allowed(no_color_flag: bool) -> bool:
    """The user has not opted out: no ``--no-color`` and no non-empty ``NO_COLOR``
    (https://no-color.org: an empty value does not count)."""
    return not no_color_flag and not os.environ.get("NO_COLOR")


def use_color(stream: TextIO, no_color_flag: bool) -> bool:
    """Colour for ``stream``: a terminal, and the user has not opted out."""
    return isatty(stream) and color_allowed(no_color_flag)


def terminal_width(stream: TextIO, fallback: int) -> int:
    """The width of the terminal ``stream`` is; ``fallback`` whenever it is not one, so
    output to files and pipes is reproducible."""
    if not isatty(stream):
        return fallback
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        columns = shutil.get_terminal_size((fallback, 24)).columns
    return columns if columns > 0 else fallback  # a pty without a size reports 0


def open_output(path: Path) -> TextIO:
    """``--output FILE`` opened for writing: never through a symlink, never into a FIFO or a
    device (the path may sit in an untrusted tree). Problems are a :class:`UsageError`."""
    from ._safeio import NotRegularFileError
    from ._safeio import open_output as open_fd

    try:
        return open(open_fd(path), "w", encoding="utf-8")
    except NotRegularFileError as exc:
        raise UsageError(
            f"refusing to write {path}: it {exc.strerror}; name a regular file "
            "(or redirect standard output)"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def add_no_color_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-color", action="store_true", help="never use colour (NO_COLOR is honoured too)"
    )


def canonical_format(text: str) -> str:
    """``--format`` spellings to the one used in help (``md`` is ``markdown``)."""
    return FORMAT_ALIASES.get(text, text)


def add_format_option(
    parser: argparse.ArgumentParser, choices: tuple[str, ...], default: str | None = None
) -> None:
    parser.add_argument("--format", type=canonical_format, choices=choices, default=default)


class StatusLine:
    """One live line on a terminal's stderr for work that takes a while ("parsed 120/417").

    Silent when stderr is not a terminal (pipes, CI logs, pre-commit) and for the first
    ``delay`` seconds, so quick runs print nothing; ``close()`` erases it before the report.
    """

    def __init__(self, stream: TextIO = sys.stderr, delay: float = 2.0) -> None:
        import time

        self._clock = time.monotonic
        self._stream = stream
        self._live = isatty(stream)
        self._start = self._clock() + delay
        self._shown = False

    def update(self, text: str) -> None:
        if not self._live or self._clock() < self._start:
            return
        width = terminal_width(self._stream, 80) - 1
        self._stream.write("\r\x1b[K" + text[:width])
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


@contextmanager
def progress_line(label: str) -> Iterator[Callable[[str], None]]:
    """A :class:`StatusLine` for a command: ``update("parsed 3/9")`` shows ``LABEL: parsed
    3/9`` after ``PATCHAUDIT_PROGRESS_DELAY`` seconds (default 2), erased on the way out."""
    raw = os.environ.get("PATCHAUDIT_PROGRESS_DELAY", "2")
    try:
        delay = float(raw)
    except ValueError:
        message = f"PATCHAUDIT_PROGRESS_DELAY must be a number of seconds, not {raw!r}"
        raise UsageError(message) from None
    status = StatusLine(delay=delay)
    try:
        yield lambda text: status.update(f"{label}: {text}")
    finally:
        status.close()
