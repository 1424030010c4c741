"""A file's ``# noqa`` comments: ``# noqa: MPA201`` on a line, ``# patchaudit: noqa`` for the file.

The static engine reads them while summarising a file; the judge (:mod:`patchaudit.judge`)
reads them from the source when there is no static project (the pytest plugin, an audit
without the static check), so a comment means the same everywhere.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass, field

# Codes of any linter (E402, UP006, MPA201): a suppression naming only another linter's codes is
# not a bare one, so it silences no patchaudit finding on its line.
_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.I)
_FILE_NOQA = re.compile(
    r"#\s*patchaudit:\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?",
    re.I,
)
_CODE = re.compile(r"[A-Z]+[0-9]+", re.I)


@dataclass
class Suppressions:
    """`# noqa` comments by line (None = bare noqa) and the file-level `# patchaudit: noqa`."""

    lines: dict[int, frozenset[str] | None] = field(default_factory=dict)
    file_codes: frozenset[str] | None = None
    file_line: int | None = None
    file_wide: bool = False

    def suppresses(self, code: str, line: int) -> bool:
        if self.file_wide and (self.file_codes is None or code in self.file_codes):
            return True
        if line not in self.lines:
            return False
        codes = self.lines[line]
        return codes is None or code in codes


def parse_suppressions(source: str, tree: ast.Module) -> Suppressions:
    result = Suppressions()
    if "noqa" not in source and "NOQA" not in source:
        return result
    strings = None
    for number, text in enumerate(source.splitlines(), start=1):
        if "#" not in text or "noqa" not in text.lower():
            continue
        if strings is None:
            strings = _string_spans(tree)
        file_match = _FILE_NOQA.search(text)
        if file_match and not _inside_string(strings, number, file_match.start()):
            result.file_wide = True
            result.file_line = number
            result.file_codes = _codes(file_match.group("codes"))
            continue
        match = _NOQA.search(text)
        if match and not _inside_string(strings, number, match.start()):
            result.lines[number] = _codes(match.group("codes"))
    return result


def with_codes(comment: str | None, codes: Iterable[str]) -> str | None:
    """``comment`` (a line's comment, from ``#`` on; None: it has none) naming ``codes`` in a
    ``# noqa``, merged into the noqa it has; None when it already silences them all."""
    if comment is None:
        return f"# noqa: {', '.join(sorted(set(codes)))}"
    match = _NOQA.search(comment)
    if match is None:  # another comment: the noqa goes after it
        return f"{comment}  # noqa: {', '.join(sorted(set(codes)))}"
    present = _codes(match.group("codes"))
    if present is None:  # a bare noqa silences every code already
        return None
    missing = sorted(set(codes) - present)
    if not missing:
        return None
    end = match.end("codes")
    return f"{comment[:end]}, {', '.join(missing)}{comment[end:]}"


def _codes(group: str | None) -> frozenset[str] | None:
    if not group:
        return None
    return frozenset(code.upper() for code in _CODE.findall(group))


def _string_spans(tree: ast.Module) -> list[tuple[int, int, int, int]]:
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            if node.end_lineno is not None and node.end_col_offset is not None:
                spans.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset))
    return spans


def _inside_string(spans: list[tuple[int, int, int, int]], line: int, col: int) -> bool:
    for start_line, start_col, end_line, end_col in spans:
        if (start_line, start_col) <= (line, col) < (end_line, end_col):
            return True
    return False


def read_suppressions(path: str) -> Suppressions | None:
    """The comments of the Python file at ``path``; None when it cannot be read or parsed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        tree = ast.parse(data, filename=path)
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        source = data.decode(encoding).removeprefix("\ufeff")
    except (OSError, SyntaxError, ValueError, UnicodeError, RecursionError):
        return None
    return parse_suppressions(source, tree)
