"""``check --add-noqa``: a ``# noqa: CODE`` on each reported line, merged with the one it has.

An edit is made only where a comment can go: the line must end outside any string and without
a backslash continuation (:mod:`tokenize` decides), and the file must parse to the same tree
afterwards with every code silenced on its line (read back with the engine's own noqa parser).
A file that fails any of this is left as it was and named, never half edited. Line endings,
the encoding (a BOM too) and the file's mode are kept.
"""

from __future__ import annotations

import ast
import io
import os
import re
import stat
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._findings import Finding
from .._safeio import read_regular, reason, write_atomic
from ..model.noqa import parse_suppressions, with_codes

# Not silenced by a line's noqa: a file that does not parse has none (MPA001), and the fix for
# an unused noqa (MPA002) is deleting it.
_NOT_LINE_CODES = frozenset({"MPA001", "MPA002"})
_PYTHON_SUFFIXES = (".py", ".pyw", ".pyi")
_LINE = re.compile(r".*?(?:\r\n|\r|\n)|.+", re.S)  # Python's line breaks only (not \f, \x1c)


@dataclass
class NoqaEdits:
    codes: int = 0  # codes added
    lines: int = 0
    files: int = 0
    skipped: list[str] = field(default_factory=list)  # "path:line: CODE: why", one a finding


def add_noqa(findings: Iterable[Finding], cwd: Path, sources: Mapping[str, str]) -> NoqaEdits:
    """Edit the files of ``findings`` (paths relative to ``cwd``; ``sources`` maps a path shown
    through a symlink to the real file, as :attr:`Report.source_files`)."""
    wanted: dict[str, dict[int, set[str]]] = {}
    for finding in findings:
        if finding.rule in _NOT_LINE_CODES or finding.line < 1 or finding.path.startswith("<"):
            continue
        wanted.setdefault(finding.path, {}).setdefault(finding.line, set()).add(finding.rule)
    edits = NoqaEdits()
    for path, lines in sorted(wanted.items()):
        real = sources.get(path) or str(cwd / path)
        problem = _edit_file(path, real, lines, edits)
        if problem is not None:
            edits.skipped += [
                f"{path}:{line}: {', '.join(sorted(codes))}: {problem}"
                for line, codes in sorted(lines.items())
            ]
    return edits


def _edit_file(path: str, real: str, wanted: dict[int, set[str]], edits: NoqaEdits) -> str | None:
    """Add the comments to one file; the reason it was left alone, or None."""
    try:
        data = read_regular(real)
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except OSError as exc:
        return f"cannot read ({reason(exc)})"
    if not path.endswith(_PYTHON_SUFFIXES) and not re.match(rb"#![^\n]*python", data):
        return "not a Python file"
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
        before = ast.dump(ast.parse(text))
        ends, comments = _line_ends(text)
    except (SyntaxError, ValueError, UnicodeError, tokenize.TokenError, RecursionError):
        return "the file does not parse"
    lines = _LINE.findall(text)
    added = changed = 0
    for number, codes in sorted(wanted.items()):
        if number not in ends or number > len(lines):
            edits.skipped.append(
                f"{path}:{number}: {', '.join(sorted(codes))}: the line continues on the next "
                "(a backslash or a string): no comment can go at its end"
            )
            continue
        line = lines[number - 1]
        body = line.rstrip("\r\n")
        start = comments.get(number)
        comment = body[start:] if start is not None else None
        new = with_codes(comment, codes)
        if new is None:
            continue
        code_part = body[:start] if start is not None else body.rstrip() + "  "
        lines[number - 1] = code_part + new + line[len(body) :]
        added += len(codes)  # reported, so none of them is silenced there yet
        changed += 1
    if not changed:
        return None
    result = "".join(lines)
    try:
        tree = ast.parse(result)
        same = ast.dump(tree) == before
    except (SyntaxError, ValueError, RecursionError):
        same = False
    suppressions = parse_suppressions(result, tree) if same else None
    if suppressions is None or not all(
        suppressions.suppresses(code, line)
        for line, codes in wanted.items()
        if line in ends
        for code in codes
    ):
        return "a comment there would not silence it or would change the code"
    try:
        write_atomic(real, result.encode(encoding), mode)
    except OSError as exc:
        return f"cannot write ({reason(exc)})"
    edits.codes += added
    edits.lines += changed
    edits.files += 1
    return None


def _line_ends(text: str) -> tuple[set[int], dict[int, int]]:
    """The lines that end outside any token (a comment can be added there), and the column
    where each line's comment starts."""
    ends: set[int] = set()
    comments: dict[int, int] = {}
    for token in tokenize.generate_tokens(io.StringIO(text, newline="").readline):
        if token.type in (tokenize.NEWLINE, tokenize.NL):
            ends.add(token.start[0])
        elif token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.start[1]
    return ends, comments
