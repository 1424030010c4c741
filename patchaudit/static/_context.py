"""One walk over a parsed file, producing what the checks and the import graph need.

The walk resolves names through the file's imports (``import gevent.monkey as m``,
``from time import sleep as s``) so checks compare fully-qualified names, and it tags every
statement with the execution context it runs in: at import (``module``), only when run as a script
(``main``), never at import (``function``), or never at all (``type-checking``).
"""

from __future__ import annotations

import ast
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from ..model.source import (
    EVENTLET_PATCH_FUNCTIONS,
    FUNCTION,
    GEVENT_PATCH_FUNCTIONS,
    MAIN,
    MODULE,
    TYPE_CHECKING,
    CallSite,
    FileContext,
    ImportRecord,
    PatchPoint,
)


class _Walker(ast.NodeVisitor):
    """Collects imports, calls, classes and functions with their execution context."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.context = MODULE
        self.function: ast.FunctionDef | ast.AsyncFunctionDef | None = None
        self.class_depth = 0  # > 0 inside a class body (its assignments are class attributes)
        self.branches = 0  # > 0 inside one alternative: an if/elif/else, except or match case

    # ast.NodeVisitor dispatches by building a method name and iterating fields through a
    # generator for every node: most of the walk's cost. Dispatch by type from a table built once
    # per node class, and visit only the fields that can hold nodes (never ``ctx``).
    def visit(self, node: ast.AST) -> None:
        method = _METHODS.get(type(node))
        if method is None:
            method = getattr(type(self), "visit_" + type(node).__name__, _Walker.generic_visit)
            if method is ast.NodeVisitor.visit_Constant:  # a shim for the removed ast.Num & co
                method = _Walker.generic_visit
            _METHODS[type(node)] = method
        method(self, node)

    def generic_visit(self, node: ast.AST) -> None:
        fields = _CHILD_FIELDS.get(type(node))
        if fields is None:
            fields = _CHILD_FIELDS[type(node)] = _child_fields(type(node))
        visit = self.visit
        for name in fields:
            value = getattr(node, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, ast.AST):
                        visit(item)
            elif isinstance(value, ast.AST):
                visit(value)

    # -- scopes -------------------------------------------------------------------------------
    def _visit_in(self, nodes: list[ast.stmt] | list[ast.AST], context: str) -> None:
        saved = self.context
        self.context = context
        for node in nodes:
            self.visit(node)
        self.context = saved

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_main_guard(node.test):
            if self.context == MODULE:
                self.ctx.has_main_guard = True
            self._visit_in(node.body, MAIN if self.context == MODULE else self.context)
            self._visit_in(node.orelse, self.context)
        elif _is_type_checking(node.test):
            self._visit_in(node.body, TYPE_CHECKING)
            self._visit_in(node.orelse, self.context)
        else:
            self._in_branch(node.body, node.orelse)

    def _in_branch(self, *bodies: list[ast.stmt] | list[ast.AST]) -> None:
        self.branches += 1
        for body in bodies:
            for child in body:
                self.visit(child)
        self.branches -= 1

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        self._in_branch(node.body)

    def visit_match_case(self, node: ast.match_case) -> None:
        self.visit(node.pattern)
        if node.guard is not None:
            self.visit(node.guard)
        self._in_branch(node.body)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.visit(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self.ctx.functions.setdefault(node.name, node)
        saved_function, saved_branches = self.function, self.branches
        self.function, self.branches = node, 0  # a function's own branches are its business
        inner = FUNCTION if self.context != TYPE_CHECKING else TYPE_CHECKING
        self._visit_in(node.body, inner)
        self.function, self.branches = saved_function, saved_branches

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        inner = FUNCTION if self.context != TYPE_CHECKING else TYPE_CHECKING
        self._visit_in([node.body], inner)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.ctx.classes.append((node, self.context))
        self.class_depth += 1
        self.generic_visit(node)
        self.class_depth -= 1

    # -- imports ------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._record_import(node, alias.name, ())

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve_relative(self.ctx.module, self.ctx.is_package, node.module, node.level)
        if base is None:
            return
        names = tuple(a.name for a in node.names)
        self._record_import(node, base, names)

    def _record_import(self, node: ast.stmt, module: str, names: tuple[str, ...]) -> None:
        self.ctx.imports.append(
            ImportRecord(
                line=node.lineno,
                column=node.col_offset + 1,
                module=module,
                names=names,
                context=self.context,
                end_line=node.end_lineno or node.lineno,
                end_column=(node.end_col_offset or node.col_offset) + 1,
                conditional=self.branches > 0,
            )
        )

    # -- uses ---------------------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        if self.context in (MODULE, MAIN) and self.function is None and not self.class_depth:
            self.ctx.module_assigns.append((node, self.context))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        qualname = self.ctx.qualname(node)
        if qualname is not None:
            self.ctx.references.setdefault(qualname, (node.lineno, node.col_offset + 1))
        else:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        qualname = self.ctx.aliases.get(node.id)
        if qualname is not None:
            self.ctx.references.setdefault(qualname, (node.lineno, node.col_offset + 1))

    def visit_Call(self, node: ast.Call) -> None:
        qualname = self.ctx.qualname(node.func)
        method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        self.ctx.calls.append(CallSite(node, qualname, self.context, self.function, method))
        if qualname in GEVENT_PATCH_FUNCTIONS or qualname in EVENTLET_PATCH_FUNCTIONS:
            point = _patch_point(
                self.ctx, node, qualname, self.context, self.function, self.branches > 0
            )
            self.ctx.patch_points.append(point)
        self.generic_visit(node)


_METHODS: dict[type, Callable[[_Walker, ast.AST], None]] = {}
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
_LEAF_FIELDS = frozenset({"ctx", "id", "attr", "arg", "name", "names", "module", "level"})


def _child_fields(cls: type) -> tuple[str, ...]:
    """The fields of a node class that may hold nodes: what generic_visit has to look at."""
    if cls is ast.Constant or issubclass(cls, ast.expr_context):
        return ()
    return tuple(f for f in cls._fields if f not in _LEAF_FIELDS)  # type: ignore[attr-defined]


def _patch_point(
    ctx: FileContext,
    node: ast.Call,
    qualname: str,
    context: str,
    function: ast.AST | None,
    conditional: bool,
) -> PatchPoint:
    keywords = []
    spread = []
    for kw in node.keywords:
        if kw.arg is None:
            spread.append(ctx.qualname(kw.value) or ast.unparse(kw.value))
            continue
        value: object = kw.value.value if isinstance(kw.value, ast.Constant) else "?"
        keywords.append((kw.arg, value))
    return PatchPoint(
        line=node.lineno,
        column=node.col_offset + 1,
        framework="gevent" if qualname.startswith("gevent.") else "eventlet",
        function=qualname,
        positional=sum(1 for a in node.args if not isinstance(a, ast.Starred)),
        keywords=tuple(keywords),
        context=context,
        enclosing=getattr(function, "name", None),
        conditional=conditional,
        spread=tuple(spread),
    )


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    has_name = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
    has_main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    return has_name and has_main


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _resolve_relative(
    module: str | None, is_package: bool, target: str | None, level: int
) -> str | None:
    if level == 0:
        return target
    if module is None:
        return None
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    if target:
        base.append(target)
    return ".".join(base) or None


def _collect_aliases(ctx: FileContext) -> None:
    """Bind import aliases before the main walk, visiting statements only (cheap).

    Function bodies run after the whole module has been imported, so a name imported below a
    function is still visible inside it; collecting aliases first models that.
    """
    stack: list[ast.stmt] = list(reversed(ctx.tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    ctx.aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    ctx.aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(ctx.module, ctx.is_package, node.module, node.level)
            if base is not None:
                for alias in node.names:
                    if alias.name != "*":
                        ctx.aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        else:
            for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, name, None)
                if children:
                    stack.extend(reversed(children))


def build_context(
    path: str, module: str | None, is_package: bool, source: str, tree: ast.Module
) -> FileContext:
    ctx = FileContext(path=path, module=module, is_package=is_package, source=source, tree=tree)
    _collect_aliases(ctx)
    _Walker(ctx).visit(tree)
    return ctx


_T = TypeVar("_T")
DEEP_STACK_BYTES = 256 * 1024 * 1024  # address space only: pages are used as the stack grows
DEEP_RECURSION_LIMIT = 60_000  # CPython accepts trees about 3000 deep; visitors use ~3 frames


def deep_call(function: Callable[..., _T], *args: object) -> _T:
    """Call ``function`` in a thread with a big stack (for :func:`deep_recursion`).

    For the rare tree that CPython accepts but that is too deep for the recursive visitors at
    the default recursion limit (``x = 1 + 1 + ...`` with 500 terms): callers retry here after a
    RecursionError, so the common case pays nothing.
    """
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(function(*args))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome.append(exc)

    try:
        previous = threading.stack_size(DEEP_STACK_BYTES)
        try:
            thread = threading.Thread(target=run, name="patchaudit-deep-tree", daemon=True)
            thread.start()
        finally:
            threading.stack_size(previous)
    except (ValueError, RuntimeError):  # no such stack here: the tree stays "too deep"
        raise RecursionError("no thread with a big enough stack") from None
    thread.join()
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    return result  # type: ignore[return-value]


@contextmanager
def deep_recursion() -> Iterator[None]:
    """Raise the (process-wide) recursion limit for the block; only inside :func:`deep_call`."""
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(max(saved, DEEP_RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)
