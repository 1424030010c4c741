"""Helpers shared by the reporters: safe text, source lines, summary wording."""

from __future__ import annotations

import io
import math
import re
import tokenize
from pathlib import Path
from typing import Any, TextIO

from .._console import isatty as isatty  # the one terminal test, for the reporters
from .._findings import Report, Severity
from .._safeio import read_regular

# C0 controls (tab excepted), DEL and C1 controls: printing them raw would let a file name or a
# message move the cursor or inject escape sequences into the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Python's own line terminators; str.splitlines() also splits on \f, \x1c, \u2028... which would
# shift line numbers relative to the ones the parser reported.
_NEWLINE = re.compile(r"\r\n|\r|\n")
_MAX_SOURCE_BYTES = 10 * 1024 * 1024


def printable(text: str) -> str:
    """One-line, terminal-safe text: controls and lone surrogates become visible escapes."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_safe(value: Any) -> Any:
    """Replace lone surrogates (from ``surrogateescape`` paths) so every JSON parser accepts it."""
    if isinstance(value, str):  # isascii first: a lone surrogate is never ASCII (C speed)
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {
            json_safe(k if isinstance(k, str) else str(k)): json_safe(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_safe(v) for v in items]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/Infinity are not JSON
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return json_safe(str(value))


def write_text(stream: TextIO, text: str) -> None:
    """Write, falling back to backslash escapes when the stream's encoding cannot take a char."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
    stream.flush()


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_line(report: Report) -> str:
    """The closing line shared by the human formats, in ruff's plain wording style."""
    line = _counts_line(report)
    if report.interrupted:  # never "All checks passed" for a run that did not finish
        line = line.replace("All checks passed", "No problems found so far")
        line = f"{report.interrupted[0].upper()}{report.interrupted[1:]}. {line}"
    return line


def fixable_line(report: Report) -> str | None:
    """ruff's line under the summary: what ``--fix`` would fix, and what waits for
    ``--unsafe-fixes``; None when no finding has a fix that can be applied."""
    safe = sum(1 for f in report.findings if f.fix_applies())
    hidden = sum(1 for f in report.findings if f.fix_applies(unsafe=True)) - safe
    if not safe and not hidden:
        return None
    line = f"[*] {safe} fixable with the `--fix` option" if safe else "No fixes available"
    if hidden:
        fixes = "fix" if hidden == 1 else "fixes"
        line += f" ({hidden} hidden {fixes} can be enabled with the `--unsafe-fixes` option)"
    return line + "."


def _counts_line(report: Report) -> str:
    counts = report.summary()
    total = len(report.findings)
    unanalysed = plural(len(report.errors), "file")
    if total:
        line = (
            f"Found {plural(total, 'problem')} ({plural(counts[Severity.ERROR.value], 'error')}, "
            f"{plural(counts[Severity.WARNING.value], 'warning')}, "
            f"{counts[Severity.INFO.value]} info)."
        )
        if report.errors:
            line += f" {unanalysed} could not be analysed."
        return line
    analysed = plural(report.files_analyzed, "file")
    if report.errors:
        return f"No problems found ({analysed} analysed), but {unanalysed} could not be analysed."
    return f"All checks passed ({analysed} analysed)."


class SourceCache:
    """Reads source files relative to ``cwd`` once; ``None`` when a file cannot be read.

    A final symlink is never followed and only regular files are opened, so a report cannot
    print lines of a file outside the checked tree; files the analysis reached through a link
    within the tree are read from their real path (``Report.source_files``).
    """

    def __init__(self, cwd: Path, source_files: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.source_files = source_files or {}
        self._cache: dict[str, list[str] | None] = {}
        self._nodes: dict[str, dict[tuple[int, int], list[tuple[int, int]]]] = {}

    def lines(self, path: str) -> list[str] | None:
        if path not in self._cache:
            self._cache[path] = self._read(path)
        return self._cache[path]

    def line(self, path: str, lineno: int) -> str | None:
        lines = self.lines(path)
        if lines is None or not 1 <= lineno <= len(lines):
            return None
        return lines[lineno - 1]

    def span(self, path: str, line: int, column: int) -> tuple[int, int] | None:
        """(end line, end column) of the expression or statement that starts at ``line``:
        ``column`` (1-based) in ``path``, for underlining findings that carry no end; the
        widest node that ends on that line, else the widest one. ``None`` when the file does
        not parse or nothing starts there."""
        if path not in self._nodes:
            self._nodes[path] = self._starts(path)
        ends = self._nodes[path].get((line, column - 1))
        if not ends:
            return None
        same_line = [end for end in ends if end[0] == line]
        return max(same_line or ends)

    def _starts(self, path: str) -> dict[tuple[int, int], list[tuple[int, int]]]:
        import ast
        import warnings

        lines = self.lines(path)
        starts: dict[tuple[int, int], list[tuple[int, int]]] = {}
        if lines is None:
            return starts
        try:
            with warnings.catch_warnings():  # invalid escapes in the user's code are not ours
                warnings.simplefilter("ignore")
                tree = ast.parse("\n".join(lines))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return starts
        for node in ast.walk(tree):
            end_line, end_col = (
                getattr(node, "end_lineno", None),
                getattr(node, "end_col_offset", None),
            )
            if (
                isinstance(node, (ast.expr, ast.stmt))
                and end_line is not None
                and end_col is not None
            ):
                starts.setdefault((node.lineno, node.col_offset), []).append(
                    (end_line, end_col + 1)
                )
        return starts

    def _read(self, path: str) -> list[str] | None:
        try:
            data = read_regular(self.source_files.get(path) or self.cwd / path, _MAX_SOURCE_BYTES)
        except (OSError, ValueError):  # ValueError: NUL or unencodable char in the path
            return None
        try:
            encoding, _ = tokenize.detect_encoding(iter(data.splitlines(keepends=True)).__next__)
        except SyntaxError:
            encoding = "utf-8"
        try:
            text = data.decode(encoding, "replace")
        except LookupError:
            text = data.decode("utf-8", "replace")
        if text.startswith("\ufeff"):
            text = text[1:]
        lines = _NEWLINE.split(text)
        if lines[-1] == "":  # the split after a final newline is not a line of the file
            lines.pop()
        return lines


class TextBuffer(io.StringIO):
    """Collects rich's output; reports the real stream's encoding so rich picks ASCII boxes
    for a non-UTF-8 stream instead of writing characters the stream cannot encode."""

    def __init__(self, encoding: str = "utf-8") -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def buffered_console(
    *, color: bool, width: int, encoding: str = "utf-8", wrap: bool = True
) -> tuple[Any, TextBuffer]:
    """A rich Console that renders into a string, coloured exactly when the caller says so.

    ``wrap=False`` (output that is not a terminal) prints every line whole, however long:
    CI logs and pagers wrap for themselves and a hard wrap breaks commands and paths.
    Tables are still laid out at ``width``.

    force_terminal/no_color are explicit so FORCE_COLOR, NO_COLOR or TTY_COMPATIBLE in the
    environment cannot override the caller's decision; markup/emoji are off because the text
    comes from user code and must be shown literally.
    """
    from rich.console import Console

    buffer = TextBuffer(encoding)
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        no_color=not color,
        color_system="auto" if color else None,
        highlight=False,
        markup=False,
        emoji=False,
        force_jupyter=False,
        force_interactive=False,
        legacy_windows=False,
        soft_wrap=not wrap,
    )
    return console, buffer


def _pieces(word: str, joints: str) -> list[str]:
    """``word`` cut after each of ``joints``: where a long identifier may break."""
    return [p for p in re.split(f"(?<=[{re.escape(joints)}])", word) if p]


def _break_long(cell: Any, width: int, joints: str) -> Any:
    """``cell`` with every word longer than ``width`` broken into lines after its joints."""
    from rich.text import Text

    if not isinstance(cell, (str, Text)):
        return cell
    text = Text(cell) if isinstance(cell, str) else cell
    cuts: list[int] = []
    for word in re.finditer(r"\S+", text.plain):
        if len(word.group()) <= width:
            continue
        used, offset = 0, word.start()
        for piece in _pieces(word.group(), joints):
            if used and used + len(piece) > width:
                cuts.append(offset)
                used = 0
            used += len(piece)
            offset += len(piece)
    if not cuts:
        return cell
    return Text("\n").join(text.divide(cuts))


def hanging(console: Any, prefix: str, value: str, style: str = "bold") -> None:
    """``prefix`` then ``value``; on a terminal, wrapped lines continue under the value (a
    hanging indent), not at column 0. Off a terminal the console does not wrap at all."""
    from rich.cells import cell_len
    from rich.text import Text

    if console.soft_wrap:
        console.print(Text.assemble((prefix, style), value))
        return
    indent = " " * cell_len(prefix)
    for i, part in enumerate(Text(value).wrap(console, max(20, console.width - len(indent)))):
        part.rstrip()
        console.print(Text.assemble((prefix, style) if i == 0 else indent, part))


def table_fits(console: Any, table: Any, joints: tuple[str, ...] = ("", "./(=,", "./(=,_")) -> bool:
    """Lay ``table`` out so no word is split: every column at least as wide as its longest
    word, the rest of the width shared in proportion to what each column could use (rich
    alone shrinks the widest columns first and splits their words). A long identifier may
    break after a dot, slash, parenthesis, ``=`` or comma (``gevent.socket.`` /
    ``create_connection``), and only when even that is too wide, after an underscore.
    False when nothing fits; the caller then drops or merges columns, or leaves it to rich.
    ``joints=("",)`` allows whole words only. A ``no_wrap`` column keeps its full width, and
    none gets less than its ``min_width``.
    """
    from rich.measure import Measurement
    from rich.text import Text

    unlimited = console.options.update_width(1_000_000)  # rich clamps to the width it is given
    sizes = [
        [Measurement.get(console, unlimited, c) for c in (column.header, *column._cells)]
        for column in table.columns
    ]
    highs = [
        col.width or max(m.maximum for m in size)
        for col, size in zip(table.columns, sizes, strict=True)
    ]
    padding = sum(table._get_padding_width(i) for i in range(len(table.columns)))
    room = console.width - table._extra_width - padding
    if sum(highs) <= room:
        return True  # rich's natural layout: nothing wraps that need not
    for joint in joints:
        lows = []
        for column, size in zip(table.columns, sizes, strict=True):
            parts = [
                len(piece)
                for c in (column.header, *column._cells)
                if isinstance(c, (str, Text))
                for word in str(c).split()
                for piece in (_pieces(word, joint) if joint else [word])
            ]
            low = min(max(m.minimum for m in size), max(parts, default=0) or 1_000_000)
            if column.no_wrap:
                low = max(m.maximum for m in size)
            lows.append(column.width or max(low, column.min_width or 0))
        if sum(lows) <= room:
            break
    else:
        return False
    spare, wants = room - sum(lows), sum(highs) - sum(lows)
    widths = [low + (high - low) * spare // wants for low, high in zip(lows, highs, strict=True)]
    for column, width in zip(table.columns, widths, strict=True):
        column.width = width
        if joint:
            column._cells[:] = [_break_long(c, width, joint) for c in column._cells]
    return True
