"""MPA55x, unpatched-queue: multiprocessing primitives and stdlib queue internals."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.source import FileContext
from ._model import Hit, Scope, rule

_MULTIPROCESSING = frozenset(
    {
        "multiprocessing.Queue",
        "multiprocessing.JoinableQueue",
        "multiprocessing.SimpleQueue",
        "multiprocessing.Pool",
        "multiprocessing.Manager",
        "multiprocessing.Event",
        "multiprocessing.pool.Pool",
        "multiprocessing.queues.Queue",
        "concurrent.futures.ProcessPoolExecutor",
        "concurrent.futures.process.ProcessPoolExecutor",
        "billiard.Pool",
        "billiard.Queue",
        "billiard.Manager",
    }
)


@rule(
    code="MPA551",
    name="multiprocessing-primitive",
    category=Category.UNPATCHED_QUEUE,
    severity=Severity.WARNING,
    summary="A multiprocessing queue, pool, manager or event is used in a gevent program",
    message="`{call}()` relies on helper threads or C-level waits that break once threading is "
    "patched",
    why="""
`multiprocessing` queues, pools and managers use feeder and handler threads plus a blocking
`select()` in `Connection.poll()`. With threading patched those threads are greenlets, so the
blocking call stops everything: `Pool` hangs after starting workers, `Event().wait()` never
returns (FM-12; the `patch_thread` docstring says so).
""",
    fix="Use plain `multiprocessing.Process` with pipes you wait on cooperatively, `gipc`, or "
    "subprocesses; keep pools in a separate, unpatched process.",
    bad="""
from multiprocessing import Pool
with Pool(4) as pool:
    pool.map(work, items)
""",
    good="""
import gipc
with gipc.pipe() as (reader, writer):
    gipc.start_process(work, args=(writer,))
""",
    references=("FM-12", "gevent/gevent#936", "benoitc/gunicorn#1311"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"multiprocessing", b"ProcessPoolExecutor", b"billiard"),
)
def check_multiprocessing(ctx: FileContext) -> Iterator[Hit]:
    waits_forever = None
    for call in ctx.calls:
        name = call.qualname or _context_method(ctx, call.node)
        if name not in _MULTIPROCESSING:
            continue
        if name.endswith(".Event"):
            # An Event has no helper thread: what hangs is `wait()` with no timeout, blocking
            # in C (gevent#2017). A handshake that waits with a timeout returns.
            if waits_forever is None:
                waits_forever = any(
                    c.method == "wait" and not c.node.args and not c.node.keywords
                    for c in ctx.calls
                )
            if not waits_forever:
                continue
        yield Hit(line=call.node.lineno, column=call.node.col_offset + 1, args={"call": name})


def _context_method(ctx: FileContext, node: ast.Call) -> str | None:
    """`multiprocessing.get_context("spawn").Pool()` reads as `multiprocessing.Pool`."""
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
        if ctx.qualname(func.value.func) == "multiprocessing.get_context":
            return f"multiprocessing.{func.attr}"
    return None


_STDLIB_QUEUES = frozenset({"queue.Queue", "queue.LifoQueue", "queue.PriorityQueue"})
_INTERNALS = frozenset({"mutex", "not_empty", "not_full", "all_tasks_done"})


def _gevent_patches_queue(project, hit: Hit) -> bool:
    return project.patch_lists.is_patched("queue", "Queue")


def _queue_uses(ctx: FileContext) -> tuple[set[str], list[ast.Attribute]]:
    """In one walk: the names (``q``, ``self.q``) bound to a stdlib queue instance anywhere in
    the file, and the attribute uses that could touch its internals."""
    names: set[str] = set()
    candidates: list[ast.Attribute] = []
    for node in ast.walk(ctx.tree):
        if isinstance(node, ast.Attribute):
            if node.attr in _INTERNALS or isinstance(node.ctx, ast.Store):
                candidates.append(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
            if ctx.qualname(node.value.func) in _STDLIB_QUEUES:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(ast.unparse(t) for t in targets)
    return names, candidates


@rule(
    code="MPA552",
    name="stdlib-queue-internals",
    category=Category.UNPATCHED_QUEUE,
    severity=Severity.WARNING,
    summary="Code relies on `queue.Queue` internals that gevent's patched queue does not have",
    message="{detail}; the installed gevent replaces `queue.Queue`, which has no such internals",
    why="""
Since gevent 25.4.1, `patch_all()` replaces `queue.Queue`, `LifoQueue` and `PriorityQueue` with
gevent's C queues. They have no `mutex`, `not_empty`, `not_full` or `all_tasks_done`, accept no
new attributes, and subclasses behave differently; python-engineio, kombu and watchdog broke
(FM-17). patchaudit checks the installed gevent to see whether it patches `queue.Queue`.
""",
    fix="Use only the documented Queue API (`put`, `get`, `qsize`, `task_done`, `join`), keep "
    "extra state outside the queue, or use `gevent.queue.Queue` explicitly.",
    bad="""
import queue
q = queue.Queue()
with q.mutex:
    q.queue.clear()
""",
    good="""
import queue
q = queue.Queue()
while not q.empty():
    q.get_nowait()
""",
    references=("FM-17", "miguelgrinberg/python-engineio#403", "gevent/gevent#2113"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"Queue(", b"Queue)", b"Queue,", b"Queue as"),  # built, subclassed or renamed
    applies=_gevent_patches_queue,
)
def check_queue_internals(ctx: FileContext) -> Iterator[Hit]:
    for cls, _context in ctx.classes:
        for base in cls.bases:
            if ctx.qualname(base) in _STDLIB_QUEUES:
                detail = f"`{cls.name}` subclasses `{ctx.qualname(base)}`"
                yield Hit(line=cls.lineno, column=cls.col_offset + 1, args={"detail": detail})
    queues, candidates = _queue_uses(ctx)
    if not queues:
        return
    for node in candidates:
        receiver = ast.unparse(node.value)
        if receiver in queues:
            if node.attr in _INTERNALS:
                detail = f"`{receiver}.{node.attr}` is a stdlib-only internal"
            elif isinstance(node.ctx, ast.Store) and node.attr != "queue":
                detail = f"`{receiver}.{node.attr} = ...` sets an attribute on a queue"
            else:
                continue
            yield Hit(line=node.lineno, column=node.col_offset + 1, args={"detail": detail})
