"""Runtime rules about what the running process did (MPA45x, MPA65x, MPA75x, MPA85x)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

from .._findings import Category, Severity
from ._model import Hit, rule


def _patch_at(ctx, patch: dict) -> tuple[str, int]:
    return ctx.facts.display(patch.get("file")), int(patch.get("line") or 1)


def _app_frame(ctx, stack: list[dict]) -> dict | None:
    """The innermost frame of the application's own code (stacks are innermost last)."""
    for frame in reversed(stack):
        if ctx.facts.is_app_file(frame.get("file")):
            return frame
    return None


def _target_location(ctx) -> tuple[str, int]:
    target = ctx.facts.first("target") or {}
    path = target.get("file")
    line = ctx.facts.binding_line(path, target.get("callable") or "") if path else None
    return ctx.facts.display(path), line or 1


@rule(
    code="MPA451",
    name="both-frameworks-at-runtime",
    category=Category.EVENTLET_COEXISTENCE,
    severity=Severity.ERROR,
    summary="The running process was patched by both gevent and eventlet",
    message="{framework} patched the process at {here} after {other} did at {there}",
    why="""
Observed in the live process: both frameworks patched. Each installs its own hub and replaces
the same stdlib attributes, so the process hangs or fails with `Cannot convert greenlet.greenlet
to gevent._gevent_c_greenlet_primitives.SwitchOutGreenletWithLoop` (FM-06, gevent#1956).
""",
    fix="Keep one framework per process; remove the other patch call (and the package, if a "
    "library auto-selects it).",
    bad="""
from gevent import monkey; monkey.patch_all()
import eventlet; eventlet.monkey_patch()
""",
    good="""
from gevent import monkey; monkey.patch_all()
""",
    references=("FM-06", "gevent/gevent#1956"),
    kind="runtime",
)
def check_both_frameworks(ctx) -> Iterator[Hit]:
    first: dict[str, dict] = {}
    for patch in ctx.facts.patches:
        framework = patch.get("framework")
        other = "eventlet" if framework == "gevent" else "gevent"
        if other in first and framework not in first:
            path, line = _patch_at(ctx, patch)
            there = "{}:{}".format(*_patch_at(ctx, first[other]))
            yield Hit(
                path=path,
                line=line,
                column=1,
                args={
                    "framework": framework,
                    "here": f"{path}:{line}",
                    "other": other,
                    "there": there,
                },
            )
        first.setdefault(framework, patch)


@rule(
    code="MPA452",
    name="mixed-patch-owners",
    category=Category.EVENTLET_COEXISTENCE,
    severity=Severity.ERROR,
    summary="Patched stdlib objects in the running process come from different frameworks",
    message="after start-up {detail}",
    why="""
When gevent and eventlet both patch, whichever ran second wins some attributes and not others:
`socket.socket` can be eventlet's while `threading.Lock` is gevent's. Greenlets of one hub then
wait on objects of the other and the process hangs (FM-06, reproduced in the knowledge base).
""",
    fix="Patch with exactly one framework.",
    bad="""
from gevent import monkey; monkey.patch_all()
import eventlet; eventlet.monkey_patch()
""",
    good="""
from gevent import monkey; monkey.patch_all()
""",
    references=("FM-06",),
    kind="runtime",
)
def check_mixed_owners(ctx) -> Iterator[Hit]:
    owners = (ctx.facts.first("owners") or {}).get("owners") or {}
    frameworks = {
        name: str(module).split(".")[0]
        for name, module in owners.items()
        if str(module).split(".")[0] in ("gevent", "eventlet")
    }
    if len(set(frameworks.values())) < 2:
        return
    detail = ", ".join(f"`{name}` is {fw}'s" for name, fw in sorted(frameworks.items()))
    patch = ctx.facts.patches[-1] if ctx.facts.patches else {}
    path, line = _patch_at(ctx, patch)
    yield Hit(path=path, line=line, column=1, args={"detail": detail}, evidence={"owners": owners})


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
    kind="runtime",
)
def check_fork_after_patch(ctx) -> Iterator[Hit]:
    for event in ctx.facts.all("fork"):
        if not event.get("after_patch"):
            continue
        path = ctx.facts.display(event.get("file"))
        line = int(event.get("line") or 1)
        what = event.get("what", "fork")
        yield Hit(
            path=path,
            line=line,
            column=1,
            severity=_FORK_SEVERITY.get(what),
            args={"what": what, "where": f"{path}:{line}", "phase": event.get("phase", "import")},
        )


def _library_hits(ctx, library: str) -> Iterator[Hit]:
    for event in ctx.facts.all("libraries"):
        if event.get("library", "").split(".")[0] != library or event.get("ok") is not False:
            continue
        module = event.get("library", library)
        chain = ctx.facts.shortest_chain(module)
        path, line = _fallback_location(ctx)
        for importer, imported in pairwise(chain):
            importer_file = ctx.facts.module_file(importer)
            if ctx.facts.is_app_file(importer_file):
                found = ctx.facts.import_site(importer, imported)
                if found:
                    path, line = ctx.facts.display(importer_file), found
        yield Hit(
            path=path,
            line=line,
            column=1,
            args={"detail": event.get("detail", "")},
            evidence={"import_chain": chain, "check": event.get("check")},
        )


def _fallback_location(ctx) -> tuple[str, int]:
    target = ctx.facts.first("target") or {}
    return ctx.facts.display(target.get("file")), 1


def _library_rule(
    code: str,
    name: str,
    library: str,
    summary: str,
    why: str,
    fix: str,
    bad: str,
    good: str,
    references: tuple[str, ...],
    severity=Severity.ERROR,
):
    def check(ctx) -> Iterator[Hit]:
        return _library_hits(ctx, library)

    return rule(
        code=code,
        name=name,
        category=Category.INCOMPATIBLE_LIBRARY,
        severity=severity,
        summary=summary,
        message="{detail}",
        why=why,
        fix=fix,
        bad=bad,
        good=good,
        references=references,
        kind="runtime",
    )(check)


_library_rule(
    "MPA751",
    "psycopg2-blocking-at-runtime",
    "psycopg2",
    "psycopg2 is loaded in the running app with no wait callback installed",
    """
Checked in the live process after start-up: `psycopg2.extensions.get_wait_callback()` is None,
so every query waits inside libpq and blocks the whole worker (FM-09).
""",
    "Call `psycogreen.gevent.patch_psycopg()` right after patching.",
    "import psycopg2\n",
    "from psycogreen.gevent import patch_psycopg\npatch_psycopg()\nimport psycopg2\n",
    ("FM-09", "dimagi/commcare-hq#7706"),
)
_library_rule(
    "MPA752",
    "grpc-not-gevent-at-runtime",
    "grpc",
    "grpcio is loaded in the running app without gevent mode",
    """
Checked in the live process: grpc's Cython core has no gevent I/O installed (its `gevent_g`
hook, read from grpc's source, is unset), so grpc runs its own pollers and threads and hangs or
deadlocks under patching (FM-10).
""",
    "Call `grpc.experimental.gevent.init_gevent()` right after `patch_all()`.",
    "import grpc\n",
    "import grpc.experimental.gevent as grpc_gevent\ngrpc_gevent.init_gevent()\n",
    ("FM-10", "grpc/grpc#4629"),
)
_library_rule(
    "MPA753",
    "zmq-socket-not-green-at-runtime",
    "zmq",
    "The running app created pyzmq sockets that are not `zmq.green` sockets",
    """
Found by scanning live objects: pyzmq sockets whose class is not `zmq.green`'s wait inside
libzmq and block every greenlet (FM-11).
""",
    "`import zmq.green as zmq` wherever sockets are created.",
    "import zmq\n",
    "import zmq.green as zmq\n",
    ("FM-11", "zeromq/pyzmq#765"),
)
_library_rule(
    "MPA754",
    "cassandra-reactor-at-runtime",
    "cassandra",
    "cassandra-driver chose a non-gevent connection class at import",
    """
`cassandra.cluster.DefaultConnection` is decided when the module is imported; in the running
app it is not `GeventConnection`, so the driver runs its own event loop thread (FM-27).
""",
    "Pass `connection_class=GeventConnection` to `Cluster`, and patch before importing cassandra.",
    "from cassandra.cluster import Cluster\n",
    "from cassandra.io.geventreactor import GeventConnection\n",
    ("FM-27", "apache/cassandra-python-driver#308"),
    Severity.WARNING,
)
_library_rule(
    "MPA755",
    "urllib3-queue-class-at-runtime",
    "urllib3",
    "urllib3's connection pools use the stdlib queue in the running app",
    """
`urllib3.connectionpool.ConnectionPool.QueueCls` was bound when urllib3 was imported; in the
running app it is not gevent's `LifoQueue`, which is linked to the non-deterministic pool
deadlock of urllib3#3289 / gevent#1957 (FM-18).
""",
    "Patch before importing requests/urllib3, or set `ConnectionPool.QueueCls = "
    "gevent.queue.LifoQueue` after patching.",
    "import requests\nfrom gevent import monkey; monkey.patch_all()\n",
    "from gevent import monkey; monkey.patch_all()\nimport requests\n",
    ("FM-18", "urllib3/urllib3#3289"),
    Severity.WARNING,
)


@rule(
    code="MPA851",
    name="hub-blocked",
    category=Category.BLOCKING_CALL,
    severity=Severity.ERROR,
    summary="The gevent hub was blocked while the app imported or served requests",
    message="the hub was blocked for more than {seconds:.2f}s {during}, in `{function}`",
    why="""
gevent's monitor thread saw the event loop make no progress for longer than the threshold:
while one greenlet runs blocking code (an unpatched C call, a stale `sleep`, CPU-bound work), no
other request is served (FM-09, FM-29, FM-03). The stack is the blocked greenlet's, trimmed to
the application's own frames.
""",
    fix="Make the call cooperative (patch first, a green driver), or move it to "
    "`gevent.get_hub().threadpool.apply(...)`; split CPU-bound work.",
    bad="""
def app(environ, start_response):
    hashlib.pbkdf2_hmac("sha256", pw, salt, 2_000_000)   # seconds of CPU
""",
    good="""
def app(environ, start_response):
    gevent.get_hub().threadpool.apply(hashlib.pbkdf2_hmac, ("sha256", pw, salt, 2_000_000))
""",
    references=("FM-29", "FM-09", "FM-03", "FM-16"),
    kind="runtime",
)
def check_hub_blocked(ctx) -> Iterator[Hit]:
    worst: dict[tuple[str, int], dict] = {}
    for event in ctx.facts.all("block"):
        frame = _app_frame(ctx, event.get("stack") or [])
        if frame is None:
            continue
        key = (ctx.facts.display(frame.get("file")), int(frame.get("line") or 1))
        if key not in worst or event.get("blocking_time", 0) > worst[key]["event"]["blocking_time"]:
            worst[key] = {"event": event, "frame": frame, "count": 0}
        worst[key]["count"] = worst[key].get("count", 0) + 1
    for (path, line), item in worst.items():
        event, frame = item["event"], item["frame"]
        during = (
            f"while serving {event['path']}"
            if event.get("path")
            else f"during {event.get('phase')}"
        )
        stack = [
            f"{ctx.facts.display(f.get('file'))}:{f.get('line')} in {f.get('function')}"
            for f in event.get("stack") or []
            if ctx.facts.is_app_file(f.get("file"))
        ]
        yield Hit(
            path=path,
            line=line,
            column=1,
            args={
                "seconds": float(event.get("blocking_time") or 0),
                "during": during,
                "function": frame.get("function", "?"),
            },
            evidence={"blocked_stack": stack, "reports": item["count"], "path": event.get("path")},
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
    kind="runtime",
)
def check_collapse(ctx) -> Iterator[Hit]:
    for event in ctx.facts.all("serve"):
        single = float(event.get("single") or 0)
        wall = float(event.get("wall") or 0)
        count = sum((event.get("statuses") or {}).values()) or int(event.get("requests") or 0)
        parallel = min(ctx.concurrency, count)
        if single < 0.02 or parallel < 2:
            continue  # too fast to tell blocking from scheduling noise
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
                    "path": event.get("path"),
                    "wall": wall,
                    "ratio": ratio,
                    "single": single,
                },
                evidence={"concurrency": parallel, "latencies_s": event.get("latencies", [])[:20]},
            )
