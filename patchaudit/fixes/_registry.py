"""Which rule codes offer a fix, and the one lookup every fixer starts from.

A fixer reads the finding (code, place, evidence) and the file's source; the rules stay data and
never know about edits.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from .._findings import Finding
from ._model import Fix, Source

Fixer = Callable[[Source, Finding], "Fix | None"]
FIXERS: dict[str, Fixer] = {}


def fixer(code: str) -> Callable[[Fixer], Fixer]:
    def register(function: Fixer) -> Fixer:
        if code in FIXERS:
            raise ValueError(f"duplicate fixer for {code}")
        FIXERS[code] = function
        return function

    return register


def node_at(source: Source, finding: Finding, kind: type[ast.AST]) -> ast.AST | None:
    """The ``kind`` node the finding points at (its line, and its 1-based byte column)."""
    for node in ast.walk(source.tree):
        if (
            isinstance(node, kind)
            and node.lineno == finding.line  # type: ignore[attr-defined]
            and node.col_offset + 1 == finding.column  # type: ignore[attr-defined]
        ):
            return node
    return None


def has_comment(source: Source, start: int, end: int) -> bool:
    """Deleting a span with a comment in it would lose what someone wrote: no fix then."""
    return b"#" in source.data[start:end]
