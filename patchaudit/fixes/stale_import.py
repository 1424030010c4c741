"""MPA201: `from time import sleep` before the patch becomes `import time` and `time.sleep(...)`.

The module attribute is looked up at call time, so calls made after the patch get gevent's
version. Unsafe: calls made at import, before the patch, still get the original. Offered only
when the rewrite is exact: a module-level statement, the name never bound again or named in a
string (``__all__``, ``getattr``), and every use a plain call; otherwise display-only.
"""

from __future__ import annotations

import ast

from .._findings import Finding
from ._model import Applicability, Edit, Fix, Source
from ._registry import fixer, has_comment, node_at


def _bindings(tree: ast.Module, name: str, *, strings: bool = True) -> list[ast.AST]:
    """Every node other than a load that binds ``name`` (or, with ``strings``, names it)."""
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
            found.append(node)
        elif isinstance(node, ast.arg) and node.arg == name:
            found.append(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                found.append(node)
        elif isinstance(node, ast.alias) and (node.asname or node.name).split(".")[0] == name:
            found.append(node)
        elif isinstance(node, ast.Global | ast.Nonlocal) and name in node.names:
            found.append(node)
        elif isinstance(node, ast.ExceptHandler) and node.name == name:
            found.append(node)
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name == name:
            found.append(node)
        elif strings and isinstance(node, ast.Constant) and node.value == name:
            found.append(node)
    return found


def _uses(tree: ast.Module, name: str) -> tuple[list[ast.Name], bool]:
    """The loads of ``name``, and whether each is the callee of a call outside an f-string."""
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    in_fstring = {
        id(n) for j in ast.walk(tree) if isinstance(j, ast.JoinedStr) for n in ast.walk(j)
    }
    loads = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)
    ]
    plain = all(id(n) in called and id(n) not in in_fstring for n in loads)
    return loads, plain


@fixer("MPA201")
def module_attribute(source: Source, finding: Finding) -> Fix | None:
    statement = node_at(source, finding, ast.ImportFrom)
    wanted = finding.evidence.get("name")
    if (
        not isinstance(statement, ast.ImportFrom)
        or statement not in source.tree.body
        or statement.level
        or not statement.module
        or statement.col_offset
    ):
        return None
    alias = next((a for a in statement.names if a.name == wanted), None)
    if alias is None:
        return None
    module, bound = statement.module, alias.asname or alias.name
    root = module.split(".")[0]
    others = [b for b in _bindings(source.tree, bound) if b is not alias]
    # the module's own name must mean the module everywhere: `import time` only
    plain_imports = {
        id(a)
        for s in ast.walk(source.tree)
        if isinstance(s, ast.Import)
        for a in s.names
        if a.asname is None
    }
    clash = [b for b in _bindings(source.tree, root, strings=False) if id(b) not in plain_imports]
    if others or clash:
        return None
    loads, plain = _uses(source.tree, bound)
    edits = [source.edit(source.start(n), source.end(n), f"{module}.{alias.name}") for n in loads]
    imports = _import_edits(source, statement, alias, module)
    if imports is None:
        return None
    edits += imports
    return Fix(
        Applicability.UNSAFE if plain else Applicability.DISPLAY_ONLY,
        f"Use `import {module}` and `{module}.{alias.name}` where `{bound}` was used",
        tuple(sorted(edits, key=lambda e: e.start)),
    )


def _import_edits(
    source: Source, statement: ast.ImportFrom, alias: ast.alias, module: str
) -> list[Edit] | None:
    """Replace the from-import with `import module`, or take the name out of it and put
    `import module` before it; no second `import module` when one comes earlier (the line goes,
    with its trailing comment, as ruff's unused-import fix does)."""
    imported = any(
        isinstance(s, ast.Import)
        and s.lineno < statement.lineno
        and any(a.name == module and a.asname is None for a in s.names)
        for s in source.tree.body
    )
    start, end = source.start(statement), source.end(statement)
    if len(statement.names) == 1:
        rest = source.data[end : source.line_end(end)].strip()
        whole_line = source.line_start(start) == start and (not rest or rest.startswith(b"#"))
        if imported and whole_line:
            return [source.edit(start, source.line_end(end), "")]
        return [source.edit(start, end, f"import {module}")]
    index = statement.names.index(alias)
    names = statement.names
    if index + 1 < len(names):
        span = (source.start(alias), source.start(names[index + 1]))
    else:
        span = (source.end(names[index - 1]), source.end(alias))
    if has_comment(source, *span):  # a comment inside a parenthesised name list
        return None
    edits = [source.edit(*span, "")]
    if not imported:
        edits.append(source.edit(start, start, f"import {module}{source.newline}"))
    return edits
