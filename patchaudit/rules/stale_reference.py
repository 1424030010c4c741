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
from ._model import RUNTIME, Hit, Scope, rule

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
    summary="A module-level name is bound to a patched object before the patch call",
    message="`{binding}` binds the original `{module}.{name}` before patching; it {harm}",
    why="""
Monkey-patching replaces the attribute on the module (`time.sleep`), not the objects other
modules already hold. `from time import sleep` or `sleep = time.sleep` executed before the patch
keeps the blocking original forever: every greenlet that calls it stops the whole process, with
no error (FM-03). gevent's own warning covers only `ssl.SSLContext`.
""",
    fix="Patch before this module is imported; or refer to the attribute at call time "
    "(`import time` ... `time.sleep(1)`) so the patched version is used.",
    bad="""
from time import sleep               # the original, blocking sleep
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
from time import sleep               # gevent's cooperative sleep
""",
    references=("FM-03", "FM-01", "gevent/gevent#112"),
    scope=Scope.PRE_PATCH,
    triggers=_TRIGGERS,
    applies=_patched,
)
def check_stale_binding(ctx: FileContext) -> Iterator[Hit]:
    for record in ctx.imports:
        if record.context not in (MODULE, MAIN) or record.module not in _CANDIDATE_MODULES:
            continue
        for name in record.names:
            if name != "*":
                yield Hit(
                    line=record.line,
                    column=record.column,
                    context=record.context,
                    args={
                        "binding": f"from {record.module} import {name}",
                        "module": record.module,
                        "name": name,
                        "harm": _harm(record.module, name),
                    },
                )
    for node, context in ctx.module_assigns:
        split = _split(ctx.qualname(node.value)) if isinstance(node.value, ast.Attribute) else None
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if split and targets:
            module, name = split
            pos = position(node)
            yield Hit(
                line=pos["line"],
                column=pos["column"],
                context=context,
                args={
                    "binding": f"{targets[0]} = {module}.{name}",
                    "module": module,
                    "name": name,
                    "harm": _harm(module, name),
                },
            )


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
                yield Hit(
                    line=cls.lineno,
                    column=cls.col_offset + 1,
                    context=context,
                    args={"owner": cls.name, "module": split[0], "name": split[1]},
                )


_LOCK_FACTORIES = {
    "threading.Lock": ("_thread", "allocate_lock"),
    "threading.RLock": ("_thread", "allocate_lock"),
    "threading.Condition": ("_thread", "allocate_lock"),
    "threading.Semaphore": ("_thread", "allocate_lock"),
    "threading.BoundedSemaphore": ("_thread", "allocate_lock"),
    "_thread.allocate_lock": ("_thread", "allocate_lock"),
    "_thread.RLock": ("_thread", "allocate_lock"),
}


@rule(
    code="MPA204",
    name="native-lock-before-patch",
    category=Category.STALE_REFERENCE,
    severity=Severity.WARNING,
    summary="A lock is created at import time before the patch call",
    message="`{call}()` at import creates a native lock before patching",
    why="""
A lock created before patching is a real OS lock. When one greenlet holds it and another tries to
take it, the second blocks the only thread, so the holder never runs again: a hang with no error
(FM-05). gevent re-owns some locks it knows about (logging's), not yours.
""",
    fix="Patch before this module is imported, or create the lock lazily after start-up.",
    bad="""
import threading
_cache_lock = threading.Lock()
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import threading
_cache_lock = threading.Lock()
""",
    references=("FM-05", "benoitc/gunicorn#1056"),
    scope=Scope.PRE_PATCH,
    triggers=(b"Lock", b"Condition", b"Semaphore", b"allocate_lock"),
    applies=_patched,
)
def check_native_lock(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls:
        patched = _LOCK_FACTORIES.get(call.qualname or "")
        if patched and call.context in (MODULE, MAIN):
            pos = position(call.node)
            yield Hit(
                line=pos["line"],
                column=pos["column"],
                context=call.context,
                args={"call": call.qualname, "module": patched[0], "name": patched[1]},
            )


# -- at run time (MPA251): references the probe found still holding an original ------------
_HARM = {
    "ssl": "recurses until RecursionError when configured",
    "threading": "is a native lock or thread that blocks every greenlet",
    "_thread": "is a native lock or thread that blocks every greenlet",
    "queue": "uses native locks that deadlock greenlets",
}


@rule(
    code="MPA251",
    name="stale-reference-at-runtime",
    category=Category.STALE_REFERENCE,
    severity=Severity.ERROR,
    summary="After patching, the running app still holds an original, unpatched object",
    message="`{holder}.{name}` is still the original `{original}` after patching; it {harm}",
    why="""
Found by scanning the live process after patching: every original object gevent replaced is
looked up with the garbage collector, and each module global, class attribute or subclass that
still refers to it is reported, minus the references that exist even when patching first (the
noise floor, measured in a second patch-first run). gevent does this only for `ssl.SSLContext`
(FM-03, FM-01).
""",
    fix="Patch before the holder's module is imported; or look the object up at call time "
    "(`time.sleep(...)`) instead of binding it at import (`from time import sleep`).",
    bad="""
from time import sleep     # bound before patching
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
from time import sleep
""",
    references=("FM-03", "FM-01", "FM-18"),
    runners=RUNTIME,
)
def check_stale_reference(ctx) -> Iterator[Hit]:
    facts = ctx.facts
    for event in ctx.real_stale():
        holder_file = event.holder_file
        if not facts.is_app_file(holder_file):
            continue  # third-party holders show up as evidence of MPA151 instead
        holder = event.holder or ""
        owner = holder.rpartition(".")[2] if event.holder_kind == "class" else None
        name = event.name or ""
        lookup = owner if event.holder_kind != "subclass" else None
        binding = name if event.holder_kind != "subclass" else holder.rpartition(".")[2]
        line = facts.binding_line(holder_file, binding, lookup) or 1
        module = (event.original or "").partition(".")[0]
        yield Hit(
            path=facts.display(holder_file),
            line=line,
            column=1,
            args={
                "holder": event.holder,
                "name": name,
                "original": event.original,
                "harm": _HARM.get(module, "blocks the whole process instead of yielding"),
            },
            evidence={"holder_kind": event.holder_kind, "original": event.original},
        )
