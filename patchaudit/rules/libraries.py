"""MPA7xx, incompatible-library: C drivers and clients that need an extra step under gevent.

Most of these rules are data: one table each in ``patchaudit/data/libraries.toml``, turned into
rules here. MPA703 (init_gevent before the patch) is an ordering question, so it is code.
MPA75x are the same libraries checked in the running process (the probe's ``libraries``
events), reported at the application's import of the library, where MPA70x are.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from typing import Any

from .._findings import Category, Severity
from ..model.known import load_table
from ..model.source import MAIN, MODULE, ImportRecord
from ._model import RUNTIME, Hit, Rule, Runner, Scope, add_rule, rule


def _prefixes(names: list[str]) -> Callable[[str], bool]:
    """A test for "``module`` is one of ``names`` or inside one": set lookups of the module and
    its parent packages (asked for every import of every file of a large tree)."""
    wanted = frozenset(names)

    def matches(module: str) -> bool:
        if module in wanted:
            return True
        dot = module.find(".")
        while dot != -1:
            if module[:dot] in wanted:
                return True
            dot = module.find(".", dot + 1)
        return False

    return matches


# Modules and names that hold only exception classes and constants: importing them is not use.
_DATA_MODULES = frozenset({"error", "errors", "exceptions", "exc", "constants", "const"})
_DATA_NAME = re.compile(r"[A-Za-z]\w*(?:Error|Exception|Warning)|[A-Z][A-Z0-9_]*")


def _data_only(module: str) -> bool:
    return module.rpartition(".")[2] in _DATA_MODULES


def _import_check(entry: dict[str, Any]) -> Callable[[Any], Iterator[Hit]]:
    """Project check: the library is imported and no fix is referenced anywhere."""
    modules = _prefixes(entry["modules"])
    unless = _prefixes(entry.get("unless_modules", []))
    harmless = re.compile(entry["unless_names"]) if "unless_names" in entry else None

    def counts(record: ImportRecord) -> bool:
        if not modules(record.module) or unless(record.module):
            return False
        if _data_only(record.module):
            return False  # `import zmq.error`: exception classes and constants do no I/O
        if not record.names:
            return True  # `import zmq`
        if all(_DATA_NAME.fullmatch(name) for name in record.names):
            return False  # `from zmq import ZMQError, POLLIN`
        # `from zmq import green as zmq` imports the fix; `from zmq import ZMQError` a name the
        # fix shares with the library.
        return not all(
            unless(f"{record.module}.{name}") or (harmless is not None and harmless.fullmatch(name))
            for name in record.names
        )

    def check(project) -> Iterator[Hit]:
        # Start from the few files that import the library, then ask about their programs;
        # walking every program of a big tree would cost programs x files.
        for summary in project.summaries.values():
            record = next((r for r in summary.imports if counts(r)), None)
            if record is None:
                continue
            for program in project.programs_of(summary):
                if "gevent" not in project.frameworks_of(program):
                    continue
                if entry["fixed_by"] and program.is_library:
                    continue  # the fix is a call the application makes; it is not in the tree
                if any(program.references(name) for name in entry["fixed_by"]):
                    continue  # the fix is installed somewhere in this program
                yield Hit(
                    path=summary.relpath,
                    line=record.line,
                    column=record.column,
                    args={"module": record.module},
                )
                break

    return check


def _method_check(entry: dict[str, Any]) -> Callable[[Any], Iterator[Hit]]:
    """File check: blocking method calls in files that import the library."""
    modules = _prefixes(entry["modules"])
    methods = frozenset(entry["methods"])

    def check(ctx) -> Iterator[Hit]:
        if not any(modules(r.module) for r in ctx.imports):
            return
        for call in ctx.calls:
            if call.method in methods and call.qualname is None and not _zero_timeout(call.node):
                yield Hit(
                    line=call.node.lineno,
                    column=call.node.col_offset + 1,
                    args={"method": call.method},
                )

    return check


def _register_library_rules() -> None:
    for entry in load_table("libraries.toml")["library"]:
        by_method = bool(entry.get("methods"))
        add_rule(
            Rule(
                code=entry["code"],
                name=entry["name"],
                category=Category.INCOMPATIBLE_LIBRARY,
                severity=Severity(entry["severity"]),
                summary=entry["summary"],
                message=entry["message"],
                why=entry["why"].strip(),
                fix=entry["fix"].strip(),
                bad=entry["bad"].strip("\n"),
                good=entry["good"].strip("\n"),
                references=tuple(entry["references"]),
                runners=frozenset({Runner.FILE if by_method else Runner.PROJECT}),
                scope=Scope.GEVENT_PROGRAM,
                check=_method_check(entry) if by_method else _import_check(entry),
                triggers=tuple(m.encode() for m in entry["modules"]) if by_method else (),
            )
        )


_register_library_rules()


# Where each confluent-kafka method takes its timeout: consume(num_messages, timeout).
_TIMEOUT_POSITION = {"consume": 1}


def _zero_timeout(call: ast.Call) -> bool:
    method = call.func.attr if isinstance(call.func, ast.Attribute) else ""
    index = _TIMEOUT_POSITION.get(method, 0)
    values = list(call.args[index : index + 1]) + [
        k.value for k in call.keywords if k.arg == "timeout"
    ]
    return any(isinstance(v, ast.Constant) and v.value in (0, 0.0) for v in values)


@rule(
    code="MPA703",
    name="grpc-init-gevent-before-patch",
    category=Category.INCOMPATIBLE_LIBRARY,
    severity=Severity.ERROR,
    summary="`grpc.experimental.gevent.init_gevent()` runs before the monkey-patch call",
    message="`init_gevent()` runs before the monkey-patch call; grpc needs the patched stdlib",
    why="""
`init_gevent()` "must be called AFTER the python standard lib has been patched, but BEFORE
creating any gRPC objects". Called earlier (at import before `patch_all()`, or in gunicorn's
`post_fork`/`post_init`, which run before the worker patches) it sets up grpc on native threads
and deadlocks (FM-10).
""",
    fix="Call it right after `monkey.patch_all()`; under gunicorn, from a "
    "`gevent.events.GeventDidPatchBuiltinModulesEvent` subscriber.",
    bad="""
import grpc.experimental.gevent as grpc_gevent
grpc_gevent.init_gevent()
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import grpc.experimental.gevent as grpc_gevent
grpc_gevent.init_gevent()
""",
    references=("FM-10", "grpc/grpc#15071"),
    scope=Scope.PRE_PATCH,
    triggers=(b"init_gevent",),
)
def check_init_gevent_early(ctx) -> Iterator[Hit]:
    for call in ctx.calls_to("grpc.experimental.gevent.init_gevent"):
        if call.context in (MODULE, MAIN):
            yield Hit(line=call.node.lineno, column=call.node.col_offset + 1, context=call.context)


#: The call MPA756 looks for in gunicorn's steps (the probe records it with its caller's line).
_INIT_GEVENT = "grpc.experimental.gevent.init_gevent"


@rule(
    code="MPA756",
    name="grpc-init-gevent-in-server-hook",
    category=Category.INCOMPATIBLE_LIBRARY,
    severity=Severity.ERROR,
    summary="A gunicorn server hook calls `init_gevent()` before the gevent worker patches",
    message="`init_gevent()` runs in gunicorn's {step} ({process}) before the gevent worker's "
    "`patch_all()`; grpc needs the patched stdlib",
    why="""
Seen in the running app: gunicorn's master runs the config file, `on_starting`, `when_ready`
and `pre_fork`, and the worker runs `post_fork`, all before the gevent worker calls
`patch_all()`; a worker subclass's own `patch()` may call it before `super().patch()`.
`init_gevent()` "must be called AFTER the python standard lib has been patched";
from these hooks grpc sets itself up on native threads, and workers hang or crash under load
(FM-10, grpc/grpc#15071). The static twin for module-level calls is MPA703.
""",
    fix="Call it from a `gevent.events.GeventDidPatchBuiltinModulesEvent` subscriber that the "
    "config file registers (it runs right after the worker patches), or in `post_worker_init`.",
    bad="""
# gunicorn.conf.py
def post_fork(server, worker):
    import grpc.experimental.gevent as grpc_gevent
    grpc_gevent.init_gevent()
""",
    good="""
# gunicorn.conf.py
from gevent import events

def _init_grpc(event):
    if isinstance(event, events.GeventDidPatchBuiltinModulesEvent):
        import grpc.experimental.gevent as grpc_gevent
        grpc_gevent.init_gevent()

events.subscribers.append(_init_grpc)
""",
    references=("FM-10", "grpc/grpc#15071"),
    runners=RUNTIME,
)
def check_init_gevent_in_hook(ctx) -> Iterator[Hit]:
    from ..model.events import GunicornEvent

    for event in ctx.facts.all("gunicorn"):
        if not isinstance(event, GunicornEvent):
            continue
        for call in event.calls or []:
            if call.get("after_patch", event.after_patch) is not False:
                continue
            if call.get("function") == _INIT_GEVENT and ctx.facts.is_app_file(call.get("file")):
                path, line = ctx.facts.where(call)
                yield Hit(
                    path=path,
                    line=line,
                    column=1,
                    args={
                        "step": "config file" if event.step == "config" else f"`{event.step}`",
                        "process": event.process or "?",
                    },
                    evidence={"hook": event.step, "process": event.process},
                )


# -- at run time (MPA75x): the library's own check, in the running process ------------------
def _library_hits(ctx, library: str) -> Iterator[Hit]:
    from ..model.events import LibrariesEvent

    for event in ctx.facts.all("libraries"):
        if not isinstance(event, LibrariesEvent):
            continue
        if (event.library or "").split(".")[0] != library or event.ok is not False:
            continue
        module = event.library or library
        chain = ctx.facts.shortest_chain(module)
        # the direct import of the library, where the static MPA70x twin is reported
        site = ctx.facts.app_import_site(chain, outermost=False)
        path, line = site or ctx.facts.target_place()
        yield Hit(
            path=path,
            line=line,
            column=1,
            args={"detail": event.detail or ""},
            evidence={"import_chain": chain, "check": event.check},
        )


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
        runners=RUNTIME,
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
