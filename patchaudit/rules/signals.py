"""MPA50x, unpatched-signal: stdlib signal handlers run on gevent's hub."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.source import FileContext
from ._helpers import argument, body_of, calls_in, local_function
from ._model import Hit, Scope, rule

# Calls that block or switch greenlets; from a handler running on the hub they raise
# BlockingSwitchOutError (FM-13).
_BLOCKING_QUALNAMES = frozenset(
    {
        "time.sleep",
        "gevent.sleep",
        "gevent.joinall",
        "gevent.wait",
        "gevent.killall",
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "urllib.request.urlopen",
        "socket.create_connection",
        "os.waitpid",
    }
)
_BLOCKING_PREFIXES = ("requests.", "httpx.")
_BLOCKING_METHODS = frozenset(
    {
        "sleep",
        "join",
        "joinall",
        "wait",
        "acquire",
        "stop",
        "shutdown",
        "serve_forever",
        "kill",
        "recv",
        "recv_into",
        "recvfrom",
        "sendall",
        "connect",
        "accept",
        "urlopen",
    }
)


def _blocking_call(ctx: FileContext, handler) -> tuple[str, int] | None:
    for stmt in body_of(handler):
        for node in ast.walk(stmt):
            if isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    text = ast.unparse(item.context_expr)
                    if "lock" in text.lower():
                        return f"with {text}", node.lineno
    for call, qualname in calls_in(ctx, body_of(handler)):
        if qualname in _BLOCKING_QUALNAMES or (qualname or "").startswith(_BLOCKING_PREFIXES):
            return qualname, call.lineno
        if qualname is None and isinstance(call.func, ast.Attribute):
            if call.func.attr in _BLOCKING_METHODS:
                return ast.unparse(call.func), call.lineno
    return None


# Calls that run an asyncio loop: a handler installed next to one serves asyncio, not the hub
# (a server adapter for aiohttp in a framework that also offers a gevent server).
_ASYNCIO_LOOP = frozenset(
    {"asyncio.run", "asyncio.new_event_loop", "asyncio.set_event_loop", "asyncio.get_event_loop"}
)


def _handlers(ctx: FileContext) -> Iterator[tuple[ast.Call, str, ast.expr]]:
    asyncio_functions = {
        id(c.function) for c in ctx.calls if c.function is not None and c.qualname in _ASYNCIO_LOOP
    }
    for call in ctx.calls_to("signal.signal"):
        if call.function is not None and id(call.function) in asyncio_functions:
            continue
        signum = argument(call.node, 0, "signalnum")
        handler = argument(call.node, 1, "handler")
        if signum is None or handler is None:
            continue
        name = ctx.qualname(signum) or ast.unparse(signum)
        if name in ("signal.SIGCHLD", "SIGCHLD"):
            continue  # gevent patches SIGCHLD handling itself
        if ctx.qualname(handler) in ("signal.SIG_IGN", "signal.SIG_DFL"):
            continue
        yield call.node, name.removeprefix("signal."), handler


@rule(
    code="MPA501",
    name="stdlib-signal-handler",
    category=Category.UNPATCHED_SIGNAL,
    severity=Severity.INFO,
    summary="A signal handler is installed with the stdlib `signal.signal` in a gevent program",
    message="`signal.signal({signal}, ...)` handler runs on the gevent hub when the loop is idle",
    why="""
gevent patches only SIGCHLD. Other handlers installed with `signal.signal` run in whatever
greenlet is current when the signal arrives, usually the hub, where nothing may block or switch;
an Event set only from such a handler does not keep the loop alive (`LoopExit`) (FM-13). A
handler installed in a function that runs an asyncio loop serves that loop and is not reported.
""",
    fix="Use `gevent.signal_handler(signal.SIGTERM, handler)`, which runs the handler in a new "
    "greenlet.",
    bad="""
import signal
signal.signal(signal.SIGTERM, on_term)
""",
    good="""
import gevent, signal
gevent.signal_handler(signal.SIGTERM, on_term)
""",
    references=("FM-13", "benoitc/gunicorn#1126"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"signal",),
)
def check_stdlib_handler(ctx: FileContext) -> Iterator[Hit]:
    for node, signum, handler in _handlers(ctx):
        func = local_function(ctx, handler)
        if func is None or _blocking_call(ctx, func) is None:
            yield Hit(line=node.lineno, column=node.col_offset + 1, args={"signal": signum})


@rule(
    code="MPA502",
    name="blocking-signal-handler",
    category=Category.UNPATCHED_SIGNAL,
    severity=Severity.WARNING,
    summary="A stdlib signal handler blocks or switches greenlets",
    message="handler for {signal} calls `{call}` (line {call_line}), which raises "
    "BlockingSwitchOutError on the hub",
    why="""
A handler installed with `signal.signal` runs on the hub when the loop is idle. Sleeping, joining,
waiting, taking a lock, stopping a server or doing I/O there raises
`BlockingSwitchOutError: Impossible to call blocking function in the event loop callback`,
timing-dependent and therefore flaky (FM-13, reproduced in the knowledge base).
""",
    fix="Install it with `gevent.signal_handler(signum, handler)`, or make the handler only "
    "`gevent.spawn(...)` the real work, as gunicorn's gevent worker does.",
    bad="""
import signal, time
def on_term(signum, frame):
    time.sleep(1)
signal.signal(signal.SIGTERM, on_term)
""",
    good="""
import gevent, signal
def on_term():
    gevent.sleep(1)
gevent.signal_handler(signal.SIGTERM, on_term)
""",
    references=("FM-13", "gevent/gevent#799", "benoitc/gunicorn#1128"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"signal",),
)
def check_blocking_handler(ctx: FileContext) -> Iterator[Hit]:
    for node, signum, handler in _handlers(ctx):
        func = local_function(ctx, handler)
        found = _blocking_call(ctx, func) if func is not None else None
        if found:
            call, call_line = found
            yield Hit(
                line=node.lineno,
                column=node.col_offset + 1,
                args={"signal": signum, "call": call, "call_line": call_line},
                evidence={"handler": getattr(func, "name", "<lambda>"), "blocking_call": call},
            )


@rule(
    code="MPA503",
    name="signal-alarm-timer",
    category=Category.UNPATCHED_SIGNAL,
    severity=Severity.WARNING,
    summary="`signal.alarm`/`signal.setitimer` used in a gevent program",
    message="`{call}()` delivers SIGALRM to a handler that runs on the gevent hub",
    why="""
Alarm timers deliver SIGALRM to a stdlib handler, with the same hub problems as any other
`signal.signal` handler (FM-13); eventlet's blocking detector also takes SIGALRM over. Timeouts
in a gevent program belong to the event loop.
""",
    fix="Use `gevent.Timeout(seconds)` or `gevent.spawn_later(seconds, fn)` instead of alarms.",
    bad="""
import signal
signal.alarm(5)
""",
    good="""
import gevent
with gevent.Timeout(5):
    work()
""",
    references=("FM-13",),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"alarm", b"setitimer"),
)
def check_alarm(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls_to("signal.alarm", "signal.setitimer"):
        position = 0 if call.qualname == "signal.alarm" else 1
        if _is_zero(argument(call.node, position, "seconds")):
            continue  # alarm(0) and setitimer(which, 0) cancel the timer
        yield Hit(
            line=call.node.lineno, column=call.node.col_offset + 1, args={"call": call.qualname}
        )


def _is_zero(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0
