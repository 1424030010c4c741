"""Where the patch call sits: MPA101/MPA102 move it to the top of the entry module (unsafe),
MPA109 guards it against import sorters with a `# isort: split` line (safe).

The patch statement and the import it needs move, as their exact lines (trailing comments and
the comment lines right above them included), to just after the module docstring and the
``from __future__`` imports. Offered only when that is provably a move of self-contained
statements: the call is a module-level statement of the file the finding is in, the import
that binds its name is a module-level gevent/eventlet import, each moved line holds only moved
statements, and no statement between the top and the call binds a name the call uses. Unsafe:
everything above the call now runs after the patch.
"""

from __future__ import annotations

import ast

from .._findings import Finding
from ..rules._helpers import call_statement
from ._model import Applicability, Edit, Fix, Source
from ._registry import fixer
from .stale_import import _bindings

_FRAMEWORKS = ("gevent", "eventlet")
# comment lines that steer a tool about the lines below them stay where they are
_DIRECTIVES = (b"isort:", b"fmt:", b"noqa", b"type:", b"pragma")


def _header_end(body: list[ast.stmt]) -> int:
    """How many statements open the module and must stay first: the docstring, then the
    ``from __future__`` imports."""
    index = 0
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        index = int(isinstance(first.value.value, str))
    while index < len(body):
        statement = body[index]
        if not (isinstance(statement, ast.ImportFrom) and statement.module == "__future__"):
            break
        index += 1
    return index


def _root(func: ast.expr) -> str | None:
    while isinstance(func, ast.Attribute):
        func = func.value
    return func.id if isinstance(func, ast.Name) else None


def _bound_by(statement: ast.stmt) -> set[str] | None:
    """The names a module-level gevent/eventlet import binds; None for any other statement."""
    if isinstance(statement, ast.Import):
        modules = [a.name for a in statement.names]
    elif isinstance(statement, ast.ImportFrom) and not statement.level and statement.module:
        modules = [statement.module]
    else:
        return None
    if any(m.split(".")[0] not in _FRAMEWORKS for m in modules):
        return None
    return {(a.asname or a.name).split(".")[0] for a in statement.names}


def _mentioned(statements: list[ast.stmt], name: str) -> bool:
    module = ast.Module(body=statements, type_ignores=[])
    if _bindings(module, name, strings=False):
        return True
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(module))


def _span(source: Source, statement: ast.stmt, floor: int) -> tuple[int, int]:
    """The whole lines of ``statement``, with the comment lines right above it (not above line
    ``floor``, where the previous statement ends, and not a tool's directive)."""
    start = source.line_start(source.start(statement))
    line = statement.lineno
    while line - 1 > floor:
        above = source.data[source.offset(line - 1, 0) : source.offset(line, 0)].strip()
        if not above.startswith(b"#") or any(d in above for d in _DIRECTIVES):
            break
        line -= 1
        start = source.offset(line, 0)
    return start, source.line_end(source.end(statement))


@fixer("MPA101")
@fixer("MPA102")
def move_patch_to_top(source: Source, finding: Finding) -> Fix | None:
    path, _, place = str(finding.evidence.get("patch_call") or "").rpartition(":")
    path, _, line = path.rpartition(":")
    if path != finding.path or not line.isdigit() or not place.isdigit():
        return None  # the patch runs in another module: this file cannot move it
    body = source.tree.body
    call = call_statement(source.tree, int(line), int(place))
    name = _root(call.value.func) if call is not None else None  # type: ignore[attr-defined]
    if call is None or name is None:
        return None  # in a function, an `if` or a `try`: not a statement this fix can move
    position = body.index(call)
    binders = [s for s in body[:position] if name in (_bound_by(s) or ())]
    above = ast.Module(body=body[:position], type_ignores=[])
    imported = {
        id(a) for b in binders for a in b.names if (a.asname or a.name).split(".")[0] == name
    }
    if not binders or {id(n) for n in _bindings(above, name, strings=False)} - imported:
        return None  # the name is also bound by something else than a gevent/eventlet import
    binder = binders[-1]
    top = _header_end(body)
    moved = [binder, call]
    first = top
    while first < len(body) and body[first] in moved:  # already in place
        first += 1
    moving = [s for s in moved if body.index(s) >= first]
    if first >= len(body) or call not in moving:
        return None
    kept = [s for s in body[first:position] if s not in moving]
    loads = {n.id for n in ast.walk(call) if isinstance(n, ast.Name)}
    if any(_bindings(ast.Module(body=kept, type_ignores=[]), n, strings=False) for n in loads):
        return None  # the arguments use a name bound between the top and the call
    if binder in moving:
        before = body[first : body.index(binder)]
        if any(_mentioned(before, n) for n in _bound_by(binder) or ()):
            return None  # the statements above the import would see what it binds
    spans = _spans(source, body, moving)
    if spans is None:
        return None
    where = source.line_start(source.start(body[first]))
    text = "".join(source.text(a, b) for a, b in spans)
    if not text.endswith("\n"):
        text += source.newline
    if source.data[where : source.line_end(where)].strip():
        text += source.newline  # a blank line sets the patch apart from what must follow it
    edits: list[Edit] = [source.edit(where, where, text)]
    deleted: list[tuple[int, int]] = []
    for a, b in spans:
        if deleted and not source.data[deleted[-1][1] : a].strip():
            deleted[-1] = (deleted[-1][0], b)  # only blank lines between: one block goes
        else:
            deleted.append((a, b))
    for a, b in deleted:
        edits.append(source.edit(*_deletion(source, a, b), ""))
    return Fix(Applicability.UNSAFE, "Move the patch call to the top of the module", tuple(edits))


def _spans(
    source: Source, body: list[ast.stmt], moving: list[ast.stmt]
) -> list[tuple[int, int]] | None:
    """The line spans to move, merged; None when a moved line also holds a statement that
    stays (``import os; monkey.patch_all()``)."""
    spans: list[tuple[int, int]] = []
    for statement in moving:
        index = body.index(statement)
        floor = body[index - 1].end_lineno or 0 if index else 0
        start, end = _span(source, statement, floor)
        if spans and start < spans[-1][1]:  # the same line as the previous one moved
            start = spans[-1][0]
            spans.pop()
        spans.append((start, end))
    for statement in body:
        offset = source.start(statement)
        inside = any(a <= offset < b for a, b in spans)
        if inside != (statement in moving):
            return None
    return spans


def _deletion(source: Source, start: int, end: int) -> tuple[int, int]:
    """What deleting a span removes: one blank line more when one precedes it and another (or
    the end of the file) follows, so the statements that stay keep their spacing."""
    above = source.line_start(start - 1) if start else start
    if start == 0 or source.data[above:start].strip():
        return start, end
    if end == len(source.data):
        return above, end
    after = source.line_end(end)
    return (start, after) if not source.data[end:after].strip() else (start, end)


@fixer("MPA109")
def split_after_patch(source: Source, finding: Finding) -> Fix | None:
    """A `# isort: split` line right after the patch statement: isort (and ruff's isort) sort
    what follows it on its own, so nothing moves above the call. A comment: the code is
    unchanged."""
    statement = call_statement(source.tree, finding.line, finding.column)
    if statement is None:
        return None
    end = source.end(statement)
    after = source.line_end(end)
    rest = source.data[end:after].strip()
    if rest and not rest.startswith(b"#"):
        return None  # `monkey.patch_all(); import os`: no line of its own to follow
    content = "# isort: split" + source.newline
    if after == len(source.data) and not source.data.endswith(b"\n"):
        content = source.newline + content
    return Fix(
        Applicability.SAFE,
        "Add `# isort: split` after the patch call",
        (source.edit(after, after, content),),
    )
