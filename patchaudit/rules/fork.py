"""MPA6xx, fork-after-patch: daemonizing, fork start methods and fork hooks.

MPA60x read the source; MPA651 is the fork the running process made after patching.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.source import FileContext
from ._helpers import argument, body_of, calls_in, local_function
from ._model import RUNTIME, Hit, Scope, rule


@rule(
    code="MPA601",
    name="daemonize-after-patch",
    category=Category.FORK_AFTER_PATCH,
    severity=Severity.ERROR,
    summary="The program daemonizes (closes descriptors / double-forks) in a gevent program",
    message="{how} in a gevent program closes or orphans the event loop's descriptors",
    why="""
Daemonizing closes every file descriptor, including the ones the gevent loop, its signal pipe,
the DNS resolver and the threadpool use, and a raw fork skips `hub.reinit()`. Afterwards DNS
hangs, `epoll ADD failed: Bad file descriptor` appears, or `subprocess` crashes (FM-14).
""",
    fix="Daemonize before importing gevent and patching, or let a supervisor (systemd, "
    "supervisord, the container runtime) keep the process in the foreground.",
    bad="""
import daemon
with daemon.DaemonContext():
    serve()
""",
    good="""
# systemd unit: Type=simple, ExecStart=/srv/app/bin/serve
serve()
""",
    references=("FM-14", "gevent/gevent#2", "circus-tent/circus#441"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"DaemonContext", b"closerange", b"setsid", b"daemonize"),
)
def check_daemonize(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls:
        if call.qualname in ("daemon.DaemonContext", "daemon.daemon.DaemonContext"):
            yield _hit(call.node, "`daemon.DaemonContext()`")
        elif call.qualname == "os.closerange":
            yield _hit(call.node, "`os.closerange()`")
        elif call.qualname == "os.setsid" and call.function is not None:
            forks = [q for _, q in calls_in(ctx, call.function.body) if q == "os.fork"]
            if len(forks) >= 2:
                yield _hit(call.node, "a double fork with `os.setsid()`")


def _hit(node: ast.Call, how: str) -> Hit:
    return Hit(line=node.lineno, column=node.col_offset + 1, args={"how": how})


@rule(
    code="MPA602",
    name="multiprocessing-fork-start-method",
    category=Category.FORK_AFTER_PATCH,
    severity=Severity.WARNING,
    summary="The `fork` start method is chosen for multiprocessing in a gevent program",
    message='`{call}("fork")` forks a process that holds gevent\'s hub and greenlets',
    why="""
A `fork` child inherits the parent's hub, its descriptors and whatever greenlets and threads were
mid-flight; only gevent's own `os.fork` re-initializes the hub, and greenlets other than the
current one do not survive (FM-14).
""",
    fix="Use the `spawn` or `forkserver` start method, or `gipc` for gevent-aware processes.",
    bad="""
import multiprocessing
multiprocessing.set_start_method("fork")
""",
    good="""
import multiprocessing
multiprocessing.set_start_method("spawn")
""",
    references=("FM-14", "gevent/gevent#957"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"fork",),
)
def check_fork_start_method(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls_to("multiprocessing.set_start_method", "multiprocessing.get_context"):
        method = argument(call.node, 0, "method")
        if isinstance(method, ast.Constant) and method.value == "fork":
            yield Hit(
                line=call.node.lineno,
                column=call.node.col_offset + 1,
                args={"call": call.qualname.rsplit(".", 1)[-1]},
            )


@rule(
    code="MPA603",
    name="gevent-in-fork-hook",
    category=Category.FORK_AFTER_PATCH,
    severity=Severity.WARNING,
    summary="An `os.register_at_fork` hook uses gevent APIs",
    message="the `{hook}` hook passed to `os.register_at_fork` calls `{call}`",
    why="""
Fork hooks run while the process is between parent and child, with gevent's own fork handling
in progress; using the hub, its threadpool or greenlets there hangs on Python 3.11+
(gevent#2023) (FM-14).
""",
    fix="Keep fork hooks to plain bookkeeping; do gevent work after the fork returns, in the "
    "child's "
    "normal start-up code.",
    bad="""
import gevent, os
def reopen():
    gevent.get_hub().threadpool.apply(setup)
os.register_at_fork(after_in_child=reopen)
""",
    good="""
import os
def reopen():
    needs_setup.set()
os.register_at_fork(after_in_child=reopen)
""",
    references=("FM-14", "gevent/gevent#2023"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"register_at_fork",),
)
def check_fork_hook(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls_to("os.register_at_fork"):
        for kw in call.node.keywords:
            func = local_function(ctx, kw.value)
            if func is None:
                continue
            for inner, qualname in calls_in(ctx, body_of(func)):
                if qualname and (qualname == "gevent" or qualname.startswith("gevent.")):
                    yield Hit(
                        line=call.node.lineno,
                        column=call.node.col_offset + 1,
                        args={"hook": kw.arg, "call": qualname},
                        evidence={"call_line": inner.lineno},
                    )
                    break


# -- at run time (MPA65x) -------------------------------------------------------------------
_FORK_SEVERITY = {"os.fork": Severity.WARNING, "os.forkpty": Severity.WARNING}


@rule(
    code="MPA651",
    name="fork-after-patch-observed",
    category=Category.FORK_AFTER_PATCH,
    severity=Severity.ERROR,
    summary="The running app forked, detached or closed descriptors after patching",
    message="`{what}` at {where} after the process was patched ({phase})",
    why="""
Observed while importing or serving: daemonizing (`setsid`, `closerange`, `DaemonContext`) after
gevent set up its loop closes or orphans the loop's descriptors, signal pipe, resolver and
threadpool; DNS then hangs, `epoll ADD ... Bad file descriptor` appears, subprocesses crash
(FM-14).
""",
    fix="Daemonize before importing gevent, or run in the foreground under a supervisor.",
    bad="""
from gevent import monkey; monkey.patch_all()
import daemon
daemon.DaemonContext().open()
""",
    good="""
from gevent import monkey; monkey.patch_all()
serve_forever()            # systemd / supervisord keeps it in the foreground
""",
    references=("FM-14", "gevent/gevent#2", "circus-tent/circus#441"),
    runners=RUNTIME,
)
def check_fork_after_patch(ctx) -> Iterator[Hit]:
    from ..model.events import ForkEvent

    for event in ctx.facts.all("fork"):
        if not isinstance(event, ForkEvent) or not event.after_patch:
            continue
        path, line = ctx.facts.where(event)
        what = event.what or "fork"
        yield Hit(
            path=path,
            line=line,
            column=1,
            severity=_FORK_SEVERITY.get(what),
            args={"what": what, "where": f"{path}:{line}", "phase": event.phase or "import"},
        )
