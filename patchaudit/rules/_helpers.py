"""Small AST helpers shared by the check functions."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from ..model.source import FileContext


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def argument(call: ast.Call, position: int, name: str) -> ast.expr | None:
    """The argument passed by position or by keyword, if any."""
    if len(call.args) > position and not any(isinstance(a, ast.Starred) for a in call.args):
        return call.args[position]
    return keyword(call, name)


def is_literal(node: ast.expr | None, value: object) -> bool:
    return (
        isinstance(node, ast.Constant) and node.value == value and type(node.value) is type(value)
    )


def position(node: ast.AST) -> dict[str, int]:
    return {
        "line": node.lineno,  # type: ignore[attr-defined]
        "column": node.col_offset + 1,  # type: ignore[attr-defined]
        "end_line": node.end_lineno or node.lineno,  # type: ignore[attr-defined]
        "end_column": (node.end_col_offset or node.col_offset) + 1,  # type: ignore[attr-defined]
    }


def calls_in(ctx: FileContext, body: list[ast.stmt]) -> Iterator[tuple[ast.Call, str | None]]:
    """Every call inside ``body`` with its resolved callee (nested functions included)."""
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                yield node, ctx.qualname(node.func)


def local_function(
    ctx: FileContext, node: ast.expr
) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | None:
    """Resolve a callback expression to its definition in this file (name, self.method, lambda)."""
    if isinstance(node, ast.Lambda):
        return node
    if isinstance(node, ast.Name):
        return ctx.functions.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id in ("self", "cls"):
            return ctx.functions.get(node.attr)
    return None


def body_of(func: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.stmt]:
    if isinstance(func, ast.Lambda):
        return [ast.Expr(func.body)]
    return func.body


def call_statement(tree: ast.Module, line: int, column: int) -> ast.Expr | None:
    """The module-level statement that is just the call at ``line``/``column`` (1-based, as
    findings give it): a patch call that a fix or an import sorter can move as a whole."""
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            call = statement.value
            if (call.lineno, call.col_offset + 1) == (line, column):
                return statement
    return None
