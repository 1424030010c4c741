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


@rule(
    code="MPA651",
    name="fork-after-patch-observed",
    category=Category.FORK_AFTER_PATCH,
    severity=Severity.ERROR,
    summary="After patching, the running app forked or daemonized in a way that breaks gevent",
    message="{what} at {where} {breaks}",
    why="""
gevent supports forking a patched process: its `os.fork` re-initialises the hub in the child,
and `multiprocessing` forks through it. What breaks was observed here (FM-14): a daemonizer's
`closerange` closing the running event loop's descriptor (then `epoll ... Bad file descriptor`,
DNS hangs); a fork while native threads run app code (the child gets only the forking thread:
whatever lock the others held stays held, and what they did never happens there); a fork hook
that waits on the hub in the child before gevent re-initialises it (gevent#2023); a fork that
bypasses gevent's and so skips `hub.reinit()`.
""",
    fix="Daemonize before gevent starts its hub, or run in the foreground under a supervisor; "
    "fork before starting native threads, or make them greenlets; in `after_in_child` hooks "
    "only set flags, and do gevent work after the fork returns.",
    bad="""
from gevent import monkey; monkey.patch_all()
socket.getaddrinfo(DB_HOST, 5432)   # the hub and its resolver are running
daemon.DaemonContext().open()       # closes the loop's epoll descriptor
""",
    good="""
from gevent import monkey; monkey.patch_all()
serve_forever()            # systemd / supervisord keeps it in the foreground
""",
    references=("FM-14", "gevent/gevent#2", "gevent/gevent#2023", "circus-tent/circus#441"),
    runners=RUNTIME,
)
def check_fork_after_patch(ctx) -> Iterator[Hit]:
    from ..model.events import ForkEvent

    seen: set[tuple[str, int, str]] = set()
    for event in ctx.facts.all("fork"):
        if not isinstance(event, ForkEvent) or not event.after_patch:
            continue
        found = _what_breaks(ctx.facts, event)
        if found is None:
            continue  # gevent handles this fork: nothing observed breaks
        kind, breaks, severity = found
        path, line = ctx.facts.where(event)
        if (path, line, kind) in seen:
            continue  # a pool forks once per worker, a handler once per request
        seen.add((path, line, kind))
        yield Hit(
            path=path,
            line=line,
            column=1,
            severity=severity,
            args={"what": f"`{event.what}`", "where": f"{path}:{line}", "breaks": breaks},
            evidence={"via": event.get("via"), "phase": event.phase},
        )
    for hook in ctx.facts.all("fork_hook"):
        path, line = ctx.facts.where(hook)
        if (path, line, "hook") in seen:
            continue
        seen.add((path, line, "hook"))
        waits = ctx.facts.where(hook, file="wait_file", line="wait_line")
        yield Hit(
            path=path,
            line=line,
            column=1,
            severity=Severity.WARNING,
            args={
                "what": f"the `after_in_child` hook `{hook.get('hook')}` registered",
                "where": f"{path}:{line}",
                "breaks": f"waits on gevent's hub in the forked child ({waits[0]}:{waits[1]}), "
                "before gevent re-initialises the hub: the loop is still the parent's and its "
                "threads are gone",
            },
        )


def _what_breaks(facts, event) -> tuple[str, str, Severity | None] | None:
    """(kind, what breaks, severity) for a fork event, or None when gevent handles it."""
    if event.what == "os.closerange":
        closed = event.get("hub_fds") or []
        if not closed:
            return None  # no running hub, or its descriptor was spared
        fds = ", ".join(str(fd) for fd in closed)
        return "fds", f"closes the running gevent event loop's descriptor (fd {fds})", None
    if event.what not in ("os.fork", "os.forkpty"):
        return None  # setsid, setpgrp: gevent does not care about sessions
    for thread in event.get("threads") or []:
        frame = facts.app_frame(thread.get("stack"))
        if frame is not None:
            via = event.get("via") or "the app"
            running = f"{facts.at(frame)} in {frame.get('function')}"
            return (
                "threads",
                f"(via {via}) forks while a native thread runs {running}: the child gets only "
                "the forking thread, so that work stops there and any lock it held stays held",
                Severity.WARNING,
            )
    if event.get("gevent_fork") is False and event.get("hub"):
        return (
            "raw",
            "forks around gevent's `os.fork`: the child skips `hub.reinit()` and shares the "
            "parent's event loop",
            Severity.WARNING,
        )
    return None
