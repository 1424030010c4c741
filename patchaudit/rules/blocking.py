"""MPA8xx, blocking-call: work that monkey-patching cannot make cooperative.

MPA80x read the source; MPA851/852 are what the probe measured while serving the app (only
`patchaudit TARGET` serves it; the pytest plugin reports per-test blocking under MPA851 itself,
:func:`.plugin.blocked_test_hits`, and pytest-timeout's thread method as MPA853).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._findings import Category, Severity
from ..model.source import MODULE, FileContext
from ._helpers import argument
from ._model import Hit, Runner, Scope, rule

if TYPE_CHECKING:
    from ..model.events import Frame

_GREENLET_MAKERS = frozenset({"gevent.spawn", "gevent.spawn_later", "gevent.Greenlet.spawn"})


@rule(
    code="MPA801",
    name="import-time-greenlet-wait",
    category=Category.BLOCKING_CALL,
    severity=Severity.ERROR,
    summary="A greenlet is waited for while the module is being imported",
    message="`{call}` at import time waits on greenlets while the import lock is held",
    why="""
While a module is imported, the importing greenlet holds the import lock. A greenlet that needs
to import anything (many stdlib calls import lazily) then waits for the lock forever, and the
hub reports `LoopExit: This operation would block forever` (FM-16; gunicorn#1192, gevent#728).
A script run as `__main__` that nothing imports holds no import lock and is not reported.
""",
    fix="Start and wait for greenlets from the program's start-up function (`main()`, an app "
    "factory, a server hook), not from module level.",
    bad="""
import gevent
config = gevent.spawn(fetch_config).get()
""",
    good="""
import gevent
def create_app():
    config = gevent.spawn(fetch_config).get()
""",
    references=("FM-16", "benoitc/gunicorn#1192", "gevent/gevent#728"),
    scope=Scope.GEVENT_IMPORTED,
    triggers=(b"gevent",),
)
def check_import_time_wait(ctx: FileContext) -> Iterator[Hit]:
    spawned = _spawned_names(ctx)
    for call in ctx.calls:
        if call.context != MODULE:
            continue
        if call.qualname in ("gevent.joinall", "gevent.wait", "gevent.killall"):
            yield _hit(call.node, call.qualname + "()")
        elif call.method in ("join", "get") and isinstance(call.node.func, ast.Attribute):
            receiver = call.node.func.value
            made_here = (
                isinstance(receiver, ast.Call) and ctx.qualname(receiver.func) in _GREENLET_MAKERS
            )
            if made_here or (isinstance(receiver, ast.Name) and receiver.id in spawned):
                yield _hit(call.node, ast.unparse(call.node.func) + "()")


def _spawned_names(ctx: FileContext) -> set[str]:
    names = set()
    for node, _context in ctx.module_assigns:
        if isinstance(node.value, ast.Call) and ctx.qualname(node.value.func) in _GREENLET_MAKERS:
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _hit(node: ast.Call, call: str) -> Hit:
    return Hit(line=node.lineno, column=node.col_offset + 1, args={"call": call})


_NETWORK_CALLS = frozenset(
    {
        "socket.gethostbyname",
        "socket.gethostbyname_ex",
        "socket.getaddrinfo",
        "socket.getfqdn",
        "socket.create_connection",
        "urllib.request.urlopen",
        "http.client.HTTPConnection",
        "http.client.HTTPSConnection",
        "requests.get",
        "requests.post",
        "requests.put",
        "requests.delete",
        "requests.head",
        "requests.request",
        "httpx.get",
        "httpx.post",
        "smtplib.SMTP",
        "ftplib.FTP",
    }
)


@rule(
    code="MPA802",
    name="import-time-network-call",
    category=Category.BLOCKING_CALL,
    severity=Severity.WARNING,
    summary="Network or DNS work runs while the module is being imported",
    message="`{call}()` at import time does network or DNS work under the import lock",
    why="""
DNS and network calls at import time run before the server is up, under the import lock; with
gevent's threaded resolver the worker thread needs that lock (the idna codec) and the import
hangs (FM-15, gevent#455). A settings module doing `socket.gethostbyname(...)` is the classic
case (dnspython#575). A script run as `__main__` that nothing imports holds no import lock and
is not reported.
""",
    fix="Resolve and connect lazily, on first use or in the app factory, after patching.",
    bad="""
import socket
EMAIL_HOST = socket.gethostbyname("smtp.example.com")
""",
    good="""
EMAIL_HOST = "smtp.example.com"      # resolved when the first mail is sent
""",
    references=("FM-15", "FM-16", "gevent/gevent#455", "rthalley/dnspython#575"),
    scope=Scope.GEVENT_IMPORTED,
    triggers=(b"socket", b"urlopen", b"http.client", b"requests", b"httpx", b"smtplib", b"ftplib"),
)
def check_import_time_network(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls:
        if call.context == MODULE and call.qualname in _NETWORK_CALLS:
            yield _hit(call.node, call.qualname)


_UNPATCHABLE = {
    "fcntl.flock": "file locks wait in the kernel",
    "fcntl.lockf": "file locks wait in the kernel",
    "os.system": "runs a shell and waits in C",
    "input": "reads the terminal in C",
    "os.wait": "waits for any child in C",
    "time.process_time": None,
}


@rule(
    code="MPA803",
    name="unpatchable-blocking-call",
    category=Category.BLOCKING_CALL,
    severity=Severity.INFO,
    summary="A call that monkey-patching cannot make cooperative",
    message="`{call}()` blocks every greenlet: {reason}",
    why="""
Patching replaces sockets, sleeps, locks and subprocesses, not everything that waits: `fcntl.flock`
waits in the kernel, `os.system` and `input()` wait in C. While they wait, the hub and every other
greenlet are stopped (FM-29; baseplate.py#200 found `flock` this way). It is a note, not a
warning: on real code these calls are mostly deliberate one-offs (an interactive prompt, a
terminal reset at exit, a short file lock between processes), and the source cannot tell a
one-off from a request path. The runtime audit measures how long each call really stops the hub
(MPA851).
""",
    fix="Run it in `gevent.get_hub().threadpool.apply(...)`, or use a cooperative equivalent "
    "(`subprocess.run` instead of `os.system`, a non-blocking `LOCK_NB` retry loop with "
    "`gevent.sleep`).",
    bad="""
import fcntl
fcntl.flock(fd, fcntl.LOCK_EX)
""",
    good="""
import fcntl, gevent
gevent.get_hub().threadpool.apply(fcntl.flock, (fd, fcntl.LOCK_EX))
""",
    references=("FM-29", "reddit/baseplate.py#200"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"flock", b"lockf", b"system", b"input", b"os.wait"),
)
def check_unpatchable(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls:
        name = call.qualname
        if name is None and isinstance(call.node.func, ast.Name) and call.node.func.id == "input":
            name = "input"  # the builtin, unless shadowed by an import
        reason = _UNPATCHABLE.get(name or "")
        if reason and not _lock_returns_at_once(ctx, call.node, name):
            yield Hit(
                line=call.node.lineno,
                column=call.node.col_offset + 1,
                args={"call": name, "reason": reason},
            )


def _lock_returns_at_once(ctx: FileContext, call: ast.Call, name: str | None) -> bool:
    """`flock`/`lockf` with `LOCK_NB` (the fix's retry loop) or plain `LOCK_UN` never wait."""
    if name not in ("fcntl.flock", "fcntl.lockf"):
        return False
    operation = argument(call, 1, "operation" if name == "fcntl.flock" else "cmd")
    if operation is None:
        return False
    flags = _or_operands(ctx, operation)
    return "fcntl.LOCK_NB" in flags or flags == {"fcntl.LOCK_UN"}


def _or_operands(ctx: FileContext, node: ast.expr) -> set[str | None]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _or_operands(ctx, node.left) | _or_operands(ctx, node.right)
    return {ctx.qualname(node)}


def _removed(project, hit: Hit) -> bool:
    module, _, name = hit.args["name"].rpartition(".")
    return name in project.patch_lists.removed.get(module, ())


@rule(
    code="MPA804",
    name="removed-by-patching",
    category=Category.BLOCKING_CALL,
    severity=Severity.ERROR,
    summary="Code uses an API that gevent's aggressive patching deletes",
    message="`{name}` does not exist after `patch_all()`: gevent removes it",
    why="""
With the default `aggressive=True`, `patch_all()` deletes `select.epoll` (and `kqueue`,
`devpoll`) and `selectors.EpollSelector`, because they would block the hub. Code that uses them
fails with `AttributeError`, or, when it captured them before patching, blocks (pika's
`BlockingConnection` stalled, gevent#1577; asyncio needs its selector, gunicorn#2468) (FM-25).
The list of removed names comes from the installed gevent.
""",
    fix="Use `selectors.DefaultSelector` (gevent provides a cooperative one) or `select.poll`.",
    bad="""
import selectors
sel = selectors.EpollSelector()
""",
    good="""
import selectors
sel = selectors.DefaultSelector()
""",
    references=("FM-25", "gevent/gevent#1577", "benoitc/gunicorn#2468"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"epoll", b"Epoll", b"kqueue", b"Kqueue", b"devpoll", b"Devpoll"),
    applies=_removed,
)
def check_removed(ctx: FileContext) -> Iterator[Hit]:
    for name, (line, column) in ctx.references.items():
        module, _, attr = name.rpartition(".")
        if module in ("select", "selectors") and attr in _CANDIDATES:
            yield Hit(line=line, column=column, args={"name": name})


_CANDIDATES = frozenset(
    {"epoll", "kqueue", "kevent", "devpoll", "EpollSelector", "KqueueSelector", "DevpollSelector"}
)


# -- while serving (MPA85x): only the probe serves the app ----------------------------------
def _target_location(ctx) -> tuple[str, int]:
    from ..model.events import TargetEvent

    target = ctx.facts.first("target")
    if not isinstance(target, TargetEvent) or not target.file:
        return ctx.facts.display(None), 1
    line = ctx.facts.binding_line(target.file, target.callable or "")
    return ctx.facts.display(target.file), line or 1


#: Probe steps in which the app starts up: blocking there delays start-up, it stalls no request.
_STARTUP_STEPS = ("import", "target")


@dataclass
class HubBlock:
    """One line of the app that held the hub, with its longest episode."""

    seconds: float  # measured (``hub_run``) or gevent's threshold (``block``)
    frame: Frame
    stack: list[Frame]
    phase: str | None
    path: str | None
    reports: int = 1


def hub_blocks(facts, threshold: float, *, startup: bool) -> dict[tuple[str, int], HubBlock]:
    """Every app line that held the hub while serving (or, ``startup``, while the app was
    imported and built), from gevent's monitor (``block``) and the probe's hub timer
    (``hub_run``: its heaviest sampled line per run), one entry per (path, line).

    A run the timer measured and sampled is that run's one witness: the monitor's report
    during it is dropped, since its stack is where the code was when the monitor got the GIL
    back (after a long C call, the next line). A line seen in several runs is one entry: the
    longest episode is kept and the episodes are counted.
    """
    from ..model.events import BlockEvent, HubRunEvent

    episodes: list[tuple[float, Frame, list[Frame], str | None, str | None]] = []
    timed: list[tuple[float, float]] = []  # (start, end) of the runs the timer attributed
    for event in facts.all("hub_run"):
        if isinstance(event, HubRunEvent):
            found_here = _heaviest_sample(facts, event, threshold)
            if found_here:
                timed.append((float(event.get("started") or 0), float(event.get("t") or 0)))
            episodes.extend(found_here)
    for event in facts.all("block"):
        frame = facts.app_frame(event.stack) if isinstance(event, BlockEvent) else None
        at = float(event.get("t") or 0)
        if frame is not None and not any(start <= at <= end for start, end in timed):
            seconds = float(event.blocking_time or 0)
            episodes.append((seconds, frame, list(event.stack or []), event.phase, event.path))
    found: dict[tuple[str, int], HubBlock] = {}
    for seconds, frame, stack, phase, path in episodes:
        # `run`: a real command's own work (`patchaudit run` of a worker that serves no HTTP)
        serving = (phase == "serve" and bool(path)) or phase == "run"
        if (phase in _STARTUP_STEPS) != startup or not (startup or serving):
            continue
        key = facts.where(frame)
        block = found.get(key)
        if block is None or seconds > block.seconds:
            reports = block.reports + 1 if block else 1
            found[key] = HubBlock(seconds, frame, stack, phase, path, reports)
        else:
            block.reports += 1
    return found


def _heaviest_sample(facts, event, threshold: float):
    """The run's app line with the most sampled time, if that time is half the threshold."""
    weights: dict[tuple[str, int], float] = {}
    picked: dict[tuple[str, int], Mapping[str, Any]] = {}
    for sample in event.samples or []:
        frame = facts.app_frame(sample.get("stack"))
        if frame is None or (sample.get("phase") == "serve" and not sample.get("path")):
            continue
        key = facts.where(frame)
        weights[key] = weights.get(key, 0.0) + float(sample.get("weight") or 0)
        picked.setdefault(key, sample)
    if not weights:
        return []
    key = max(weights, key=lambda k: weights[k])
    if weights[key] < threshold / 2:
        return []  # a sample taken at the very end of the run says little about it
    sample = picked[key]
    stack = list(sample.get("stack") or [])
    frame = facts.app_frame(stack)
    # The app's time in that step, not the run's: a run that starts at import goes on through
    # the probe's own steps until the first request yields.
    phase, path = sample.get("phase"), sample.get("path")
    seconds = sum(
        float(s.get("weight") or 0)
        for s in event.samples or []
        if (s.get("phase"), s.get("path")) == (phase, path)
    )
    if (event.phase, event.path) == (phase, path):
        seconds += float(event.get("tail") or 0)
    return [(seconds, frame, stack, phase, path)]


def startup_blocks(ctx) -> list[dict[str, Any]]:
    """Start-up work that held the hub (importing the app, calling its factory): for the
    timeline, not a finding -- no request was waiting yet."""
    blocks = hub_blocks(ctx.facts, ctx.max_blocking, startup=True)
    return [
        {
            "at": ctx.facts.at(b.frame),
            "function": b.frame.get("function"),
            "seconds": round(b.seconds, 3),
            "phase": b.phase,
        }
        for b in blocks.values()
    ]


@rule(
    code="MPA851",
    name="hub-blocked",
    category=Category.BLOCKING_CALL,
    severity=Severity.ERROR,
    summary="The gevent hub was blocked while the app served requests",
    message="the hub was blocked for more than {seconds:.2f}s {during}, in `{function}`",
    why="""
One greenlet ran longer than the threshold without yielding: while it runs blocking code (an
unpatched C call, a stale `sleep`, CPU-bound work, a regex that backtracks), no other request is
served (FM-09, FM-29, FM-03). Two witnesses: gevent's monitor thread, and the probe's own timer
of every run between two greenlet switches, which also sees C code that holds the GIL (the
monitor cannot look then). The line is the blocked greenlet's innermost own frame where the
run's time was sampled. Work while the app is imported or built is start-up time, shown in
the report's timeline, not here.
""",
    fix="Make the call cooperative (patch first, a green driver), or move it to "
    "`gevent.get_hub().threadpool.apply(...)`; split CPU-bound work; do one-off heavy work at "
    "start-up rather than in the first request.",
    bad="""
def app(environ, start_response):
    hashlib.pbkdf2_hmac("sha256", pw, salt, 2_000_000)   # seconds of CPU
""",
    good="""
def app(environ, start_response):
    gevent.get_hub().threadpool.apply(hashlib.pbkdf2_hmac, ("sha256", pw, salt, 2_000_000))
""",
    references=("FM-29", "FM-09", "FM-03", "FM-16"),
    runners=Runner.PROBE,
)
def check_hub_blocked(ctx) -> Iterator[Hit]:
    # one finding per blocking line, for its longest episode; "reports" counts the episodes
    for (path, line), block in hub_blocks(ctx.facts, ctx.max_blocking, startup=False).items():
        stack = [
            f"{ctx.facts.display(f.get('file'))}:{f.get('line')} in {f.get('function')}"
            for f in block.stack
            if ctx.facts.is_app_file(f.get("file"))
        ]
        yield Hit(
            path=path,
            line=line,
            column=1,
            args={
                "seconds": block.seconds,
                "during": f"while serving {block.path}" if block.path else "while the program ran",
                "function": block.frame.get("function", "?"),
            },
            evidence={"blocked_stack": stack, "reports": block.reports, "path": block.path},
        )


@rule(
    code="MPA852",
    name="concurrency-collapse",
    category=Category.BLOCKING_CALL,
    severity=Severity.ERROR,
    summary="Concurrent requests to the running app took about as long as running them one by one",
    message="{count} concurrent requests to {path} took {wall:.2f}s, {ratio:.1f}x one request "
    "({single:.3f}s): requests are served one at a time",
    why="""
The probe timed one request alone, then the same request many times in parallel from real
threads. Cooperative code serves them together, in about the time of one; when the total grows
with the number of requests, something in the handler blocks the hub (a C driver, a stale
reference, CPU work) (FM-09, FM-29).
""",
    fix="Find the blocking call (see MPA851 findings and their stacks) and make it cooperative.",
    bad="""
def app(environ, start_response):
    original_sleep(0.2)        # blocks the hub
""",
    good="""
def app(environ, start_response):
    gevent.sleep(0.2)          # yields to other requests
""",
    references=("FM-09", "FM-29"),
    runners=Runner.PROBE,
)
def check_collapse(ctx) -> Iterator[Hit]:
    from ..model.events import ServeEvent

    for event in ctx.facts.all("serve"):
        if not isinstance(event, ServeEvent):
            continue
        single = float(event.single or 0)
        wall = float(event.wall or 0)
        count = sum((event.statuses or {}).values()) or int(event.requests or 0)
        parallel = min(ctx.concurrency, count)
        if single < 0.02 or parallel < 2:
            continue  # too fast to tell blocking from scheduling noise
        if {"none", "not-sent"} & set(event.statuses or {}):
            continue  # requests that got no response timed the request timeout (MPA854)
        ratio = wall / single
        waves = -(-count // parallel)  # at best the requests need this many rounds
        if ratio >= 0.6 * count and ratio > 2 * waves:
            path, line = _target_location(ctx)
            yield Hit(
                path=path,
                line=line,
                column=1,
                args={
                    "count": count,
                    "path": event.path,
                    "wall": wall,
                    "ratio": ratio,
                    "single": single,
                },
                evidence={"concurrency": parallel, "latencies_s": list(event.latencies or [])[:20]},
            )
