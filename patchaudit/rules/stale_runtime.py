"""MPA251, stale-reference at run time: references the probe found still holding an original.

The static half of the family (MPA201-204) is in :mod:`.stale_reference`; this one reads the
``stale`` events of a real run (``patchaudit TARGET``, ``patchaudit run``).
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Iterator

from .._findings import Category, Severity
from ._model import RUNTIME, Hit, rule

# -- at run time (MPA251): references the probe found still holding an original ------------
_HARM = {
    "ssl": "it recurses until RecursionError when configured",
    "threading": "it is a native lock or thread that blocks every greenlet",
    "_thread": "it is a native lock or thread that blocks every greenlet",
    "queue": "it uses native locks that deadlock greenlets",
}
_BLOCKS = "it blocks the whole process instead of yielding"
_SHARED = "one slot shared by every greenlet, so values leak between requests"
# The same object is saved under several names; the one code writes.
_SHOWN = {"_thread._local": "threading.local", "_threading_local.local": "threading.local"}
# What an instance of an original made before patching does (the probe reports only these).
_INSTANCE_HARM = {
    "queue.SimpleQueue": "its `get()` blocks the whole process while the queue is empty (a "
    "ThreadPoolExecutor's idle worker waits there)",
    "threading.local": f"it is {_SHARED}",
    "selectors.EpollSelector": "its `select()` blocks the whole process while it waits",
    "select.epoll": "its `poll()` blocks the whole process while it waits",
}
# How the holder keeps it (the probe's ``how``), as the message says it.
_HELD = {
    "default": ", a default value,",
    "closure": ", a closure variable,",
    "partial": ", in a functools.partial,",
    "container": ", in a container,",
    "method": ", in a bound method,",
    "attribute": ", an attribute of an object built before patching,",
}
_ROOT_END = re.compile(r"[.\[(<]")


def _root(name: str) -> str:
    """The holder's own name in a path: `POOL` of `POOL._work_queue`, `wait` of `wait(sleep=)`."""
    return _ROOT_END.split(name, maxsplit=1)[0]


def _imported(path: str, line: int) -> bool:
    """Whether the binding is an import (the object is another module's, reported there)."""
    text = linecache.getline(path, line).lstrip()
    return text.startswith(("from ", "import "))


@rule(
    code="MPA251",
    name="stale-reference-at-runtime",
    category=Category.STALE_REFERENCE,
    severity=Severity.ERROR,
    summary="After patching, the running app still holds an original, unpatched object",
    message="`{holder}.{name}`{held} {state}; {harm}",
    why="""
Found by scanning the live process after patching: every original object gevent replaced is
looked up with the garbage collector, and each module global, class attribute or subclass that
still refers to it is reported. So is what the app's modules hold less directly, a few steps from
their globals and class attributes: default values, closure variables, `functools.partial`
objects, bound methods, containers and attributes of objects, and the instances built from an
original before patching that break under gevent (a `ThreadPoolExecutor`'s native
`queue.SimpleQueue`, a native `threading.local`, an epoll `selectors.DefaultSelector()`).
References that exist even when patching first (the noise floor, measured in a second
patch-first run) are left out. gevent itself checks only `ssl.SSLContext` (FM-03, FM-01, FM-05).
""",
    fix="Patch before the holder's module is imported; or look the object up at call time "
    "(`time.sleep(...)`, a default of `None`) and build executors, selectors and thread-locals "
    "after patching, instead of at import.",
    bad="""
import concurrent.futures
from time import sleep     # bound before patching
POOL = concurrent.futures.ThreadPoolExecutor(4)   # its work queue is the native SimpleQueue
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import concurrent.futures
from time import sleep
POOL = concurrent.futures.ThreadPoolExecutor(4)
""",
    references=("FM-03", "FM-01", "FM-05", "FM-18"),
    runners=RUNTIME,
)
def check_stale_reference(ctx) -> Iterator[Hit]:
    facts = ctx.facts
    for event in ctx.real_stale():
        holder_file = event.holder_file
        if not facts.is_app_file(holder_file):
            continue  # third-party holders show up as evidence of MPA151 instead
        holder = event.holder or ""
        how = event.how or "binding"
        owner = holder.rpartition(".")[2] if event.holder_kind == "class" else None
        name = event.name or ""
        lookup = owner if event.holder_kind != "subclass" else None
        binding = _root(name) if event.holder_kind != "subclass" else holder.rpartition(".")[2]
        line = facts.binding_line(holder_file, binding, lookup)
        if how not in ("binding", "subclass") and (line is None or _imported(holder_file, line)):
            continue  # not bound here by name, or imported from the module that built it
        original = _SHOWN.get(event.original or "", event.original or "")
        if how == "instance":
            state = f"is the native `{original}`, built before patching"
            harm = _INSTANCE_HARM.get(original, _BLOCKS)
        elif original == "threading.local":
            state = f"is still the original `{original}` after patching"
            harm = f"each object made from it is {_SHARED}"
        else:
            state = f"is still the original `{original}` after patching"
            harm = _HARM.get(original.partition(".")[0], _BLOCKS)
        yield Hit(
            path=facts.display(holder_file),
            line=line or 1,
            column=1,
            args={
                "holder": holder,
                "name": name,
                "held": _HELD.get(how, ""),
                "state": state,
                "harm": harm,
            },
            evidence={"holder_kind": event.holder_kind, "original": original, "how": how},
        )
