"""MPA501: `signal.signal(SIG, handler)` becomes `gevent.signal_handler(SIG, handler, SIG, None)`.

gevent calls ``handler(*args)`` in a new greenlet where the stdlib calls ``handler(signum,
frame)``, so the rewrite passes the signal number and ``None`` for the frame, the arguments the
handler was written for. Unsafe: the handler now runs in a greenlet, later than before, and
``frame`` is None. Offered only for a call that is a statement of its own (the previous handler
it returns is not used) with two plain positional arguments, and a handler proven callable with
two positional arguments (a function, method or lambda of this file); display-only for a handler
defined elsewhere, never for ``SIG_IGN``/``SIG_DFL``, a constant or a saved previous handler.
"""

from __future__ import annotations

import ast

from .._findings import Finding
from ._model import Applicability, Edit, Fix, Source
from ._registry import fixer, node_at
from .stale_import import _bindings

__all__ = ["gevent_signal_handler"]

_Function = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
# what a handler that is a name may be set from: a previous handler, maybe SIG_DFL or None
_SAVED_HANDLER = frozenset({"signal", "getsignal"})
_DEFAULTS = frozenset({"SIG_IGN", "SIG_DFL"})


def _statement_of(tree: ast.Module, call: ast.Call) -> ast.Expr | None:
    return next((n for n in ast.walk(tree) if isinstance(n, ast.Expr) and n.value is call), None)


def _plain(node: ast.expr) -> bool:
    """A name, a dotted name or a number: evaluating it twice gives the same value."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) or (
        isinstance(node, ast.Constant) and type(node.value) is int
    )


def _takes_two(function: _Function, method: bool) -> bool:
    """Whether ``function(signum, frame)`` binds (a method: after ``self``)."""
    args = function.args
    positional = len(args.posonlyargs) + len(args.args) - (1 if method else 0)
    required = positional - len(args.defaults)
    keyword_only_required = any(d is None for d in args.kw_defaults)
    return (
        required <= 2 and (positional >= 2 or args.vararg is not None) and not keyword_only_required
    )


def _method(tree: ast.Module, call: ast.Call, name: str) -> ast.FunctionDef | None:
    """``self.name`` in a method of the class that holds ``call``: that class's own ``def``."""
    holders = [
        c
        for c in ast.walk(tree)
        if isinstance(c, ast.ClassDef) and any(n is call for n in ast.walk(c))
    ]
    if holders:
        cls = holders[-1]  # the innermost: ast.walk goes breadth first
        found = [
            s
            for s in cls.body
            if (isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == name)
            or (
                isinstance(s, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in s.targets)
            )
        ]
        if len(found) == 1 and isinstance(found[0], ast.FunctionDef):
            return found[0]
    return None


def _handler_applicability(
    tree: ast.Module, call: ast.Call, handler: ast.expr
) -> Applicability | None:
    """UNSAFE when the handler is proven to take ``(signum, frame)``, DISPLAY_ONLY when it
    cannot be seen, None when it is no function at all or cannot take them."""
    if _not_a_function(handler):
        return None
    if isinstance(handler, ast.Lambda):
        return Applicability.UNSAFE if _takes_two(handler, False) else None
    function: _Function | None = None
    method = False
    if isinstance(handler, ast.Name):
        bindings = _bindings(tree, handler.id, strings=False)
        for binding in bindings:
            if isinstance(binding, ast.Name) and _is_saved_handler(tree, binding):
                return None
        if len(bindings) == 1 and isinstance(bindings[0], ast.FunctionDef):
            function = bindings[0]
    elif (
        isinstance(handler, ast.Attribute)
        and isinstance(handler.value, ast.Name)
        and handler.value.id == "self"
    ):
        function, method = _method(tree, call, handler.attr), True
    if function is None or function.decorator_list:  # a decorator may change the signature
        return Applicability.DISPLAY_ONLY
    return Applicability.UNSAFE if _takes_two(function, method) else None


def _not_a_function(value: ast.expr) -> bool:
    """A value no handler function comes from: a constant, ``SIG_IGN``/``SIG_DFL``, or what
    ``signal.signal``/``signal.getsignal`` return (a previous handler, maybe either)."""
    if isinstance(value, ast.Constant):
        return True
    called = isinstance(value, ast.Call)
    named = value.func if isinstance(value, ast.Call) else value
    name = named.attr if isinstance(named, ast.Attribute) else getattr(named, "id", "")
    return name in (_SAVED_HANDLER if called else _DEFAULTS)


def _is_saved_handler(tree: ast.Module, target: ast.Name) -> bool:
    """``old = signal.getsignal(...)``, ``H = signal.SIG_DFL``: ``target`` holds no function."""
    return any(
        isinstance(node, ast.Assign)
        and any(t is target for t in node.targets)
        and _not_a_function(node.value)
        for node in ast.walk(tree)
    )


def _gevent_import(source: Source, call: ast.Call) -> list[Edit] | None:
    """No edit when a module-level ``import gevent`` (or ``import gevent.x``) comes before the
    call; otherwise ``import gevent`` before the file's first import. None when ``gevent``
    means something else in the file."""
    bindings = _bindings(source.tree, "gevent", strings=False)
    if any(
        not (isinstance(b, ast.alias) and b.asname is None and b.name.split(".")[0] == "gevent")
        for b in bindings
    ):
        return None
    imported = any(
        isinstance(s, ast.Import)
        and s.lineno < call.lineno
        and any(a.asname is None and a.name.split(".")[0] == "gevent" for a in s.names)
        for s in source.tree.body
    )
    if imported:
        return []
    first = next(
        (
            s
            for s in source.tree.body
            if isinstance(s, ast.Import)
            or (isinstance(s, ast.ImportFrom) and s.module != "__future__")
        ),
        None,
    )
    if first is None or first.col_offset or first.lineno > call.lineno:
        return None
    start = source.start(first)
    return [source.edit(start, start, f"import gevent{source.newline}")]


@fixer("MPA501")
def gevent_signal_handler(source: Source, finding: Finding) -> Fix | None:
    call = node_at(source, finding, ast.Call)
    if not isinstance(call, ast.Call) or _statement_of(source.tree, call) is None:
        return None  # `old = signal.signal(...)`: gevent returns no previous handler
    if call.keywords or len(call.args) != 2 or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    signum, handler = call.args
    if not _plain(signum):
        return None  # `next(signals)` would be evaluated twice
    signum_text = source.text(source.start(signum), source.end(signum))
    if "\n" in signum_text:
        return None
    applicability = _handler_applicability(source.tree, call, handler)
    imports = _gevent_import(source, call)
    if applicability is None or imports is None:
        return None
    edits = [
        *imports,
        source.edit(source.start(call.func), source.end(call.func), "gevent.signal_handler"),
        source.edit(source.end(handler), source.end(handler), f", {signum_text}, None"),
    ]
    handler_text = source.text(source.start(handler), source.end(handler))
    if "\n" in handler_text or len(handler_text) > 40:
        handler_text = "handler"
    return Fix(
        applicability,
        f"Use `gevent.signal_handler({signum_text}, {handler_text}, {signum_text}, None)` "
        "(the handler runs in a greenlet, with no frame)",
        tuple(edits),
    )
