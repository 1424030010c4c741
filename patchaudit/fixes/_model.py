"""The fix model, after ruff's: a fix is edits on the source text plus how safe applying it is.

Edits hold byte offsets into the file as read (what ``ast`` positions are measured in), so
applying them never re-encodes or re-generates code; ``location``/``end_location`` give the
same places as 1-based rows and character columns for JSON and SARIF.
"""

from __future__ import annotations

import ast
import enum
from dataclasses import dataclass, field
from typing import Any


class Applicability(str, enum.Enum):
    SAFE = "safe"  # keeps what the code does: applied by --fix
    UNSAFE = "unsafe"  # changes import-time behaviour: applied with --unsafe-fixes
    DISPLAY_ONLY = "display-only"  # shown, never applied (the exact edit cannot be proven)

    def applied(self, unsafe: bool) -> bool:
        return self is Applicability.SAFE or (unsafe and self is Applicability.UNSAFE)


@dataclass(frozen=True)
class Edit:
    start: int  # byte offsets into the source, end exclusive; start == end inserts
    end: int
    content: str
    location: tuple[int, int] = (0, 0)  # (row, column), 1-based, columns in characters
    end_location: tuple[int, int] = (0, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "location": {"row": self.location[0], "column": self.location[1]},
            "end_location": {"row": self.end_location[0], "column": self.end_location[1]},
        }


@dataclass(frozen=True)
class Fix:
    applicability: Applicability
    message: str
    edits: tuple[Edit, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "applicability": self.applicability.value,
            "message": self.message,
            "edits": [e.to_json() for e in self.edits],
        }


@dataclass
class Source:
    """One file's bytes, parse tree and the offset arithmetic edits need."""

    data: bytes
    tree: ast.Module
    newline: str
    _starts: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> Source | None:
        """``None`` for what the fixer must not touch: not UTF-8, or not parseable."""
        try:
            data.decode("utf-8-sig")  # a file in another encoding is left alone
            tree = ast.parse(data)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            return None
        starts = [0]
        for index, byte in enumerate(data):
            if byte == 0x0A:
                starts.append(index + 1)
        if data.startswith(b"\xef\xbb\xbf"):  # ast columns of line 1 do not count the BOM
            starts[0] = 3
        return cls(data, tree, "\r\n" if b"\r\n" in data else "\n", starts)

    def offset(self, line: int, col: int) -> int:
        return self._starts[line - 1] + col

    def start(self, node: ast.AST) -> int:
        return self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def end(self, node: ast.AST) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def text(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8")

    def line_start(self, offset: int) -> int:
        return self.data.rfind(b"\n", 0, offset) + 1

    def line_end(self, offset: int) -> int:
        """The offset just past the newline ending the line of ``offset`` (or the file's end)."""
        found = self.data.find(b"\n", offset)
        return len(self.data) if found < 0 else found + 1

    def location(self, offset: int) -> tuple[int, int]:
        row = self.data.count(b"\n", 0, offset) + 1
        start = self._starts[row - 1] if row > 1 else 0
        return row, len(self.data[start:offset].decode("utf-8-sig", "replace")) + 1

    def edit(self, start: int, end: int, content: str) -> Edit:
        return Edit(start, end, content, self.location(start), self.location(end))
