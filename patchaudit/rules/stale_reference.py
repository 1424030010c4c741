"""MPA2xx, stale-reference: code that ran before the patch keeps the original objects.

MPA20x find the bindings in the source; MPA251 is a reference the probe found still holding
the original in the running process, minus the noise floor of a patch-first run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.source import MAIN, MODULE, FileContext
from ._helpers import position
from ._model import Hit, Scope, rule

# Modules gevent may patch; the installed gevent decides which names really are (``applies``).
_CANDIDATE_MODULES = frozenset(
    {
        "socket",
        "ssl",
        "time",
        "threading",
        "_thread",
        "queue",
        "select",
        "selectors",
        "subprocess",
        "os",
        "signal",
    }
)
_TRIGGERS = tuple(m.encode() for m in _CANDIDATE_MODULES)


def _patched(project, hit: Hit) -> bool:
    return project.patch_lists.is_patched(hit.args["module"], hit.args["name"])


def _split(qualname: str | None) -> tuple[str, str] | None:
    if not qualname:
        return None
    module, _, name = qualname.rpartition(".")
    return (module, name) if module in _CANDIDATE_MODULES else None


# Not a use of the patched object: constants (`socket.AF_INET`, `select.POLLIN`) and exception
# classes (`socket.timeout`) are the same objects before and after patching.
_NOT_USED = frozenset({"error", "herror", "gaierror", "timeout", "Empty", "Full", "ShutDown"})
_PARTIALS = frozenset({"functools.partial", "functools.partialmethod"})
_MAIN_GUARDS = frozenset({"__name__ == '__main__'", "'__main__' == __name__"})
_HOLE = "\x00"  # where the element goes in the binding text: `HANDLERS = {"sleep": \x00, ...}`
_SHAPES = {ast.List: "[\x00, ...]", ast.Tuple: "(\x00, ...)", ast.Set: "{\x00, ...}"}


def _is_use(name: str) -> bool:
    bare = name.strip("_")
    exception = name.endswith(("Error", "Exception", "Warning", "Exit")) or name in _NOT_USED
    return bool(bare) and bare.upper() != bare and not exception


def _import_time(ctx: FileContext) -> Iterator[tuple[ast.stmt, str, bool]]:
    """(statement, context, in a class body) for each statement run at import, in the contexts
    the engine gives calls: through if/for/with/try/match and class bodies, never into function
    bodies or `if TYPE_CHECKING:`; `if __name__ == "__main__":` is MAIN."""
    todo: list[tuple[ast.stmt, str, bool]] = [(s, MODULE, False) for s in reversed(ctx.tree.body)]
    while todo:
        stmt, context, in_class = todo.pop()
        yield stmt, context, in_class
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        test = ast.unparse(stmt.test) if isinstance(stmt, ast.If) else ""
        body_context = MAIN if test in _MAIN_GUARDS and context == MODULE else context
        others = [getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])]
        others += [h.body for h in [*getattr(stmt, "handlers", ()), *getattr(stmt, "cases", ())]]
        in_class = in_class or isinstance(stmt, ast.ClassDef)
        todo += [(c, context, in_class) for body in reversed(others) for c in reversed(body)]
        if test.rpartition(".")[2] != "TYPE_CHECKING":
            todo += [(c, body_context, in_class) for c in reversed(getattr(stmt, "body", []))]


def _lambdas(stmt: ast.stmt) -> Iterator[ast.Lambda]:
    """Lambdas the statement creates at import (their defaults run then, their bodies later)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        todo = [*stmt.decorator_list, *getattr(stmt, "bases", ())]
        todo += [k.value for k in getattr(stmt, "keywords", ())]
        if not isinstance(stmt, ast.ClassDef):
            todo += [*stmt.args.defaults, *stmt.args.kw_defaults]
    else:
        todo = [
            getattr(item, "context_expr", item)
            for _, value in ast.iter_fields(stmt)
            for item in (value if isinstance(value, list) else [value])
            if isinstance(item, ast.expr | ast.withitem)
        ]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Lambda):
            yield node
            todo += [*node.args.defaults, *node.args.kw_defaults]
        elif node is not None:
            todo += ast.iter_child_nodes(node)


def _defaults(args: ast.arguments) -> Iterator[tuple[str, ast.expr]]:
    positional = [*args.posonlyargs, *args.args]
    named = positional[len(positional) - len(args.defaults) :]
    yield from ((a.arg, d) for a, d in zip(named, args.defaults, strict=True))
    yield from (
        (a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
    )


def _captured(ctx: FileContext, expr: ast.expr, text: str, depth: int = 0) -> Iterator[tuple]:
    """(node, module, name, binding text) for each patched-module attribute ``expr`` holds:
    itself, or an element of a list/tuple/set/dict/`dict(...)`, one nested container deep. A
    bare name (`from time import sleep`) is reported at its import instead."""
    if isinstance(expr, ast.Attribute):
        split = _split(ctx.qualname(expr))
        if split and _is_use(split[1]):
            yield expr, *split, text.replace(_HOLE, ".".join(split))
        return
    items: list[tuple[ast.expr | None, str]] = []
    if isinstance(expr, ast.List | ast.Tuple | ast.Set):
        items = [(e, _SHAPES[type(expr)]) for e in expr.elts]
    elif isinstance(expr, ast.Dict):
        for key, value in zip(expr.keys, expr.values, strict=True):
            if key is not None:  # not `**more`
                short = isinstance(key, ast.Constant) and len(repr(key.value)) < 30
                shown = ast.unparse(key) if short else "..."
                items += [(key, f"{{{_HOLE}: ...}}"), (value, f"{{{shown}: {_HOLE}, ...}}")]
    elif isinstance(expr, ast.Call) and getattr(expr.func, "id", None) == "dict":
        if "dict" not in ctx.aliases:  # the builtin, not an imported `dict`
            items = [(a, f"dict({_HOLE})") for a in expr.args]
            items += [(k.value, f"dict({k.arg}={_HOLE}, ...)") for k in expr.keywords if k.arg]
    for item, shape in items if depth < 2 else ():
        if item is not None:
            yield from _captured(ctx, item, text.replace(_HOLE, shape), depth + 1)


def _capture_hits(ctx: FileContext) -> Iterator[Hit]:
    """The indirect forms: defaults of import-time defs and lambdas, containers, partials."""
    class_values: set[int] = set()
    lambdas = "lambda" in ctx.source  # walking every expression for them is the costly part
    for stmt, context, in_class in _import_time(ctx):
        found: list[tuple] = []
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            for arg, default in _defaults(stmt.args):
                found += _captured(ctx, default, f"def {stmt.name}({arg}={_HOLE})")
        for lam in _lambdas(stmt) if lambdas else ():
            for arg, default in _defaults(lam.args):
                found += _captured(ctx, default, f"lambda {arg}={_HOLE}: ...")
        if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if in_class:
                class_values.add(id(stmt.value))
            # `x = time.sleep` is the plain binding above; in a class body it is MPA202's
            named = isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) for t in targets)
            if not (isinstance(stmt.value, ast.Attribute) and (in_class or named)):
                caught = list(_captured(ctx, stmt.value, _HOLE))
                lhs = " = ".join(ast.unparse(t) for t in targets) if caught else ""
                found += [(*c[:3], f"{lhs} = {c[3]}") for c in caught]
        for node, module, name, binding in found:
            yield _binding_hit(position(node), context, binding, module, name)
    for call in ctx.calls:  # at import, outside a class body's `nap = partial(...)` (MPA202)
        if call.qualname in _PARTIALS and call.context in (MODULE, MAIN) and call.node.args:
            if id(call.node) not in class_values:
                shown = f"{call.qualname}({_HOLE}, ...)"
                for node, module, name, binding in _captured(ctx, call.node.args[0], shown, 2):
                    yield _binding_hit(position(node), call.context, binding, module, name)


def _binding_hit(at: dict[str, int], context: str, binding: str, module: str, name: str) -> Hit:
    args = {"binding": binding, "module": module, "name": name, "harm": _harm(module, name)}
    return Hit(**at, context=context, args=args, evidence={"module": module, "name": name})


def _harm(module: str, name: str) -> str:
    if module == "ssl":
        return "can recurse until RecursionError"
    if module in ("threading", "_thread") or name in ("Lock", "RLock", "allocate_lock"):
        return "is a native lock/thread that blocks every greenlet"
    return "blocks the whole process instead of yielding"


@rule(
    code="MPA201",
    name="stale-module-binding",
    category=Category.STALE_REFERENCE,
    severity=Severity.ERROR,
    summary="A patched object is bound at import (a name, default value, partial or container) "
    "before the patch call",
    message="`{binding}` binds the original `{module}.{name}` before patching; it {harm}",
    why="""
Monkey-patching replaces the attribute on the module (`time.sleep`), not the objects other
modules already hold. `from time import sleep` or `sleep = time.sleep` executed before the patch
keeps the blocking original forever: every greenlet that calls it stops the whole process, with
no error (FM-03). So do the less direct forms evaluated at import: default values
(`def retry(fn, sleep=time.sleep)`, `lambda s=time.sleep: ...`), `partial(time.sleep, 0.1)` and
containers (`HANDLERS = {"sleep": time.sleep}`). gevent's own warning covers only `ssl.SSLContext`.
""",
    fix="Patch before this module is imported; or refer to the attribute at call time "
    "(`import time` ... `time.sleep(1)`, a default of `None` looked up in the body) so the "
    "patched version is used.",
    bad="""
import time
from time import sleep               # the original, blocking sleep
def retry(fn, pause=time.sleep): ... # a default value holds it too
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import time
from time import sleep               # gevent's cooperative sleep
def retry(fn, pause=time.sleep): ...
""",
    references=("FM-03", "FM-01", "gevent/gevent#112"),
    scope=Scope.PRE_PATCH,
    triggers=_TRIGGERS,
    applies=_patched,
)
def check_stale_binding(ctx: FileContext) -> Iterator[Hit]:
    for record in ctx.imports:
        if record.context in (MODULE, MAIN) and record.module in _CANDIDATE_MODULES:
            at = {"line": record.line, "column": record.column}
            at.update(end_line=record.end_line, end_column=record.end_column)
            for name in (n for n in record.names if n != "*"):
                binding = f"from {record.module} import {name}"
                yield _binding_hit(at, record.context, binding, record.module, name)
    for node, context in ctx.module_assigns:
        split = _split(ctx.qualname(node.value)) if isinstance(node.value, ast.Attribute) else None
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if split and targets:
            binding = f"{targets[0]} = {split[0]}.{split[1]}"
            yield _binding_hit(position(node), context, binding, *split)
    yield from _capture_hits(ctx)


@rule(
    code="MPA202",
    name="stale-class-attribute",
    category=Category.STALE_REFERENCE,
    severity=Severity.ERROR,
    summary="A class attribute holds a patched object captured before the patch call",
    message="`{owner}.{attribute}` holds the original `{module}.{name}` captured before patching",
    why="""
Class bodies run at import. `QueueCls = queue.LifoQueue` in a class defined before the patch keeps
the stdlib queue with native locks; urllib3's connection pool did exactly this and deadlocked
under gevent (FM-03, FM-18).
""",
    fix="Patch before the module is imported, or resolve the object when the instance is created "
    "(`self.queue_cls = queue.LifoQueue` in `__init__`).",
    bad="""
import queue

class Pool:
    QueueCls = queue.LifoQueue

from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import queue

class Pool:
    QueueCls = queue.LifoQueue
""",
    references=("FM-03", "FM-18", "urllib3/urllib3#3289"),
    scope=Scope.PRE_PATCH,
    triggers=_TRIGGERS,
    applies=_patched,
)
def check_class_attribute(ctx: FileContext) -> Iterator[Hit]:
    for cls, context in ctx.classes:
        if context not in (MODULE, MAIN):
            continue
        for stmt in cls.body:
            if not isinstance(stmt, ast.Assign | ast.AnnAssign) or stmt.value is None:
                continue
            value = stmt.value
            if isinstance(value, ast.Call) and value.args:  # staticmethod(time.sleep)
                value = value.args[0]
            split = (
                _split(ctx.qualname(value)) if isinstance(value, ast.Attribute | ast.Name) else None
            )
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if split and names:
                pos = position(stmt)
                yield Hit(
                    line=pos["line"],
                    column=pos["column"],
                    context=context,
                    args={
                        "owner": cls.name,
                        "attribute": names[0],
                        "module": split[0],
                        "name": split[1],
                    },
                )


@rule(
    code="MPA203",
    name="subclass-of-patched-class",
    category=Category.STALE_REFERENCE,
    severity=Severity.ERROR,
    summary="A class subclasses a patched class before the patch call",
    message="`{owner}` subclasses the original `{module}.{name}`, defined before patching",
    why="""
A subclass defined before patching inherits from the original class, so it keeps blocking
sockets, native threads or the recursing `SSLContext` setters. gevent lists such subclasses in its
late-ssl warning ("Subclasses (NOT patched)") but only for `SSLContext` (FM-03, FM-01).
""",
    fix="Patch before the module that defines the subclass is imported.",
    bad="""
import ssl

class PinnedContext(ssl.SSLContext):
    pass

from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import ssl

class PinnedContext(ssl.SSLContext):
    pass
""",
    references=("FM-03", "FM-01", "gevent/gevent#1016"),
    scope=Scope.PRE_PATCH,
    triggers=_TRIGGERS,
    applies=_patched,
)
def check_subclass(ctx: FileContext) -> Iterator[Hit]:
    for cls, context in ctx.classes:
        if context not in (MODULE, MAIN):
            continue
        for base in cls.bases:
            split = _split(ctx.qualname(base))
            if split:
                args = {"owner": cls.name, "module": split[0], "name": split[1]}
                yield Hit(line=cls.lineno, column=cls.col_offset + 1, context=context, args=args)


_LOCK, _ON_LOCK = "a native lock", " _thread.allocate_lock threading.Lock"
_QUEUE = "a queue built on native locks"
# call -> (what it creates, the names it is built on: when the installed gevent patches any of
# them, the object made before the patch is the original). ThreadPoolExecutor() is MPA106's;
# SelectSelector() is left out, as patching re-points its class's `_select`.
_CONSTRUCTORS = {
    "threading.Lock": (_LOCK, "threading.Lock" + _ON_LOCK),
    "threading.RLock": (_LOCK, "threading._CRLock" + _ON_LOCK),
    "threading.Condition": ("a condition on a native lock", _ON_LOCK),
    "threading.Semaphore": ("a semaphore on a native lock", _ON_LOCK),
    "threading.BoundedSemaphore": ("a semaphore on a native lock", _ON_LOCK),
    "threading.Barrier": ("a barrier on a native lock", _ON_LOCK),
    "threading.Event": ("an event on a native lock", "threading.Event" + _ON_LOCK),
    "_thread.allocate_lock": (_LOCK, _ON_LOCK),
    "_thread.RLock": (_LOCK, _ON_LOCK),
    "threading.local": ("a native thread-local that all greenlets share", "threading.local"),
    "queue.Queue": (_QUEUE, "queue.Queue" + _ON_LOCK),
    "queue.LifoQueue": (_QUEUE, "queue.LifoQueue" + _ON_LOCK),
    "queue.PriorityQueue": (_QUEUE, "queue.PriorityQueue" + _ON_LOCK),
    "queue.SimpleQueue": ("a native queue whose `get()` blocks", "queue.SimpleQueue"),
    "selectors.DefaultSelector": ("a native selector", "selectors.DefaultSelector"),
    "selectors.EpollSelector": ("a native selector", "selectors.EpollSelector select.epoll"),
    "selectors.PollSelector": ("a selector on a native `select.poll`", "select.poll"),
    "select.poll": ("a native poll object", "select.poll"),
    "select.epoll": ("a native epoll object", "select.epoll"),
    "socket.socket": ("a blocking socket", "socket.socket"),
    "socket.socketpair": ("blocking sockets", "socket.socketpair"),
}


def _constructs_original(project, hit: Hit) -> bool:
    names = _CONSTRUCTORS.get(hit.args["call"], ("", ""))[1].split()
    return any(project.patch_lists.is_patched(*n.rsplit(".", 1)) for n in names)


@rule(
    code="MPA204",
    name="native-lock-before-patch",
    category=Category.STALE_REFERENCE,
    severity=Severity.WARNING,
    summary="A lock, queue, thread-local, selector or socket is created at import time before "
    "the patch call",
    message="`{call}()` at import creates {what} before patching",
    why="""
A lock created before patching is a real OS lock. When one greenlet holds it and another tries to
take it, the second blocks the only thread, so the holder never runs again: a hang with no error
(FM-05). gevent re-owns some locks it knows about (logging's), not yours. The same holds for the
other objects of patched modules made at import: `queue.Queue()` (native locks inside),
`threading.local()` (one slot shared by every greenlet), `selectors.DefaultSelector()` and
`socket.socket()` (they block the whole process), also as class attributes or default values
(`def f(*, lock=threading.Lock())`).
""",
    fix="Patch before this module is imported, or create the object lazily after start-up "
    "(in the function that uses it, or with a default of `None`).",
    bad="""
import threading
_cache_lock = threading.Lock()
_state = threading.local()           # one slot shared by every greenlet
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import threading
_cache_lock = threading.Lock()
_state = threading.local()
""",
    references=("FM-05", "benoitc/gunicorn#1056"),
    scope=Scope.PRE_PATCH,
    triggers=(
        *(b"Lock", b"Condition", b"Semaphore", b"Barrier", b"Event", b"allocate_lock"),
        *(b"local", b"Queue", b"Selector", b"poll", b"socket"),
    ),
    applies=_constructs_original,
)
def check_native_lock(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls:
        made = _CONSTRUCTORS.get(call.qualname or "")
        if made and call.context in (MODULE, MAIN):
            pos = position(call.node)
            yield Hit(**pos, context=call.context, args={"call": call.qualname, "what": made[0]})
