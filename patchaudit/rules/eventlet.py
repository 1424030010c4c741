"""MPA4xx, eventlet-coexistence: gevent and eventlet in one program.

MPA40x read the source; MPA45x what the running process did (both frameworks patched, or the
hub's objects owned by both).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._findings import Category, Severity
from ..model.source import MAIN, MODULE, FileContext
from ._helpers import argument, is_literal, keyword
from ._model import RUNTIME, Hit, Runner, Scope, rule

if TYPE_CHECKING:
    from ..model.events import PatchEvent


@rule(
    code="MPA401",
    name="eventlet-and-gevent-imported",
    category=Category.EVENTLET_COEXISTENCE,
    severity=Severity.ERROR,
    summary="The program imports both gevent and eventlet",
    message="`{module}` imported in a program that runs on {primary}",
    why="""
gevent and eventlet each install their own hub and replace the same stdlib attributes. In one
process they hang, or fail with `TypeError: Cannot convert greenlet.greenlet to
gevent._gevent_c_greenlet_primitives.SwitchOutGreenletWithLoop`; the gevent maintainer calls it
"in no way a tested or supported configuration" (FM-06, gevent#1956). Imports in mutually
exclusive places (the branches of `if async_mode == "eventlet": ... elif ...`, separate driver
functions) are alternatives and are not reported.
""",
    fix="Pick one framework for the whole process; remove the other's imports (and uninstall it "
    "if a library such as python-engineio would auto-select it).",
    bad="""
from gevent import monkey
monkey.patch_all()
import eventlet.green.socket
""",
    good="""
from gevent import monkey
monkey.patch_all()
import gevent.socket
""",
    references=("FM-06", "gevent/gevent#1956"),
    runners=Runner.PROJECT,
)
def check_both_imported(project) -> Iterator[Hit]:
    for program in project.programs:
        if program.is_library or not {"gevent", "eventlet"} <= program.used:
            continue  # a library's modules are not a process: its applications pick one
        eventlet_points = _every_run(program.patch_points("eventlet"))
        if _every_run(program.patch_points("gevent")) and eventlet_points:
            continue  # MPA402 reports the two patch calls, which is the sharper finding
        gevent_imports = _every_run(program.imports("gevent"))
        eventlet_imports = _every_run(program.imports("eventlet"))
        if not gevent_imports or not eventlet_imports:
            continue
        primary, other = (
            ("eventlet", gevent_imports) if eventlet_points else ("gevent", eventlet_imports)
        )
        if primary not in program.frameworks:
            continue  # nothing runs it on that framework (a test suite importing both drivers)
        reported: set[str] = set()
        for summary, record in other:
            if summary.relpath not in reported:
                reported.add(summary.relpath)
                yield Hit(
                    path=summary.relpath,
                    line=record.line,
                    column=record.column,
                    args={"module": record.module, "primary": primary},
                )


def _every_run(found):
    """What runs whenever the module is imported or run: module level, outside the branches of
    an `if`, `except` or `match`. `if mode == "eventlet": ... elif mode == "gevent": ...`, a
    driver per function, or a benchmark per function are alternatives, never one process."""
    return [
        (s, item) for s, item in found if item.context in (MODULE, MAIN) and not item.conditional
    ]


@rule(
    code="MPA402",
    name="both-frameworks-patch",
    category=Category.EVENTLET_COEXISTENCE,
    severity=Severity.ERROR,
    summary="Both `gevent.monkey.patch_all()` and `eventlet.monkey_patch()` are called",
    message="`{call}()` here and `{other}()` at {other_at} patch the same process",
    why="""
Whichever patches second wins some attributes and not others: sockets become eventlet's while
greenlets are gevent's, and the process hangs or raises `SwitchOutGreenletWithLoop` errors
(reproduced in the knowledge base, FM-06).
""",
    fix="Keep exactly one patch call, for the framework your server runs (gunicorn -k gevent: "
    "gevent).",
    bad="""
import eventlet
eventlet.monkey_patch()
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
""",
    references=("FM-06", "gevent/gevent#1956"),
    runners=Runner.PROJECT,
)
def check_both_patch(project) -> Iterator[Hit]:
    for program in project.programs:
        if program.is_library or not {"gevent", "eventlet"} <= program.used:
            continue
        gevent_points = _every_run(program.patch_points("gevent"))
        eventlet_points = _every_run(program.patch_points("eventlet"))
        if not gevent_points or not eventlet_points:
            continue
        for mine, others in ((gevent_points, eventlet_points), (eventlet_points, gevent_points)):
            other_summary, other_point = others[0]
            for summary, point in mine:
                yield Hit(
                    path=summary.relpath,
                    line=point.line,
                    column=point.column,
                    args={
                        "call": point.function.rsplit(".", 1)[-1],
                        "other": other_point.function.rsplit(".", 1)[-1],
                        "other_at": f"{other_summary.relpath}:{other_point.line}",
                    },
                )


_SOCKETIO_SERVERS = frozenset(
    {"flask_socketio.SocketIO", "socketio.Server", "engineio.Server", "socketio.server.Server"}
)


def _eventlet_installed(project, hit: Hit) -> bool:
    """eventlet is importable here, or the project mentions it or declares it a dependency.

    The analysing interpreter is often not the one the program is deployed with (a linter venv,
    CI), so eventlet named in the project's code or requirements counts too.
    """
    return project.mentions_eventlet or project.exists("eventlet")


@rule(
    code="MPA403",
    name="socketio-async-mode-unset",
    category=Category.EVENTLET_COEXISTENCE,
    severity=Severity.WARNING,
    summary="A Socket.IO/Engine.IO server picks its async mode itself while eventlet is installed",
    message="`{call}()` without `async_mode=` picks eventlet first when it is installed",
    why="""
python-engineio tries the async modes in the order eventlet, gevent_uwsgi, gevent, threading, so
with eventlet installed it selects eventlet even under a gunicorn gevent worker, mixing both
frameworks (FM-06; Flask-SocketIO#294: "you have to explicitly select it"). `async_mode=None`
is that same auto-selection. Test code (`test_*.py`, `*_test.py`, `conftest.py`, `tests/`),
which mocks servers or drives them with test clients, and a call that forwards `**options`,
whose caller picks the mode, are not reported.
""",
    fix='Pass `async_mode="gevent"` explicitly (or uninstall eventlet).',
    bad="""
from flask_socketio import SocketIO
socketio = SocketIO(app)
""",
    good="""
from flask_socketio import SocketIO
socketio = SocketIO(app, async_mode="gevent")
""",
    references=("FM-06", "miguelgrinberg/Flask-SocketIO#294"),
    scope=Scope.GEVENT_PROGRAM,
    triggers=(b"socketio", b"engineio"),
    applies=_eventlet_installed,
)
def check_socketio_mode(ctx: FileContext) -> Iterator[Hit]:
    if ctx.is_test_code:
        return  # tests build servers to mock or drive with test clients; none of them serves
    for call in ctx.calls:
        if call.qualname not in _SOCKETIO_SERVERS:
            continue
        mode = _async_mode(call.node, call.qualname)
        if mode is None and any(kw.arg is None for kw in call.node.keywords):
            continue  # `**options` forwards the caller's choice, made (or not) at its call site
        if mode is None or is_literal(mode, None):  # `async_mode=None` is the auto-selection
            yield Hit(
                line=call.node.lineno, column=call.node.col_offset + 1, args={"call": call.qualname}
            )


def _async_mode(node: ast.Call, qualname: str) -> ast.expr | None:
    if qualname == "engineio.Server":  # `engineio.Server(async_mode=None, ...)`: first parameter
        return argument(node, 0, "async_mode")
    return keyword(node, "async_mode")


@rule(
    code="MPA404",
    name="eventlet-deprecated",
    category=Category.EVENTLET_COEXISTENCE,
    severity=Severity.INFO,
    summary="eventlet is deprecated and in bugfix-only maintenance",
    message="`{module}` is part of eventlet, which is deprecated; plan a migration",
    why="""
`import eventlet` emits `EventletDeprecationWarning: Eventlet is deprecated`, gunicorn removed
its eventlet worker in 26.0.0, and eventlet cannot share a process with gevent (FM-06). New code
on it is a migration risk (knowledge base section 2.1). It is reported once per project, at the
first eventlet import in path order.
""",
    fix="Migrate to gevent (same programming model) or asyncio; eventlet's docs have a migration "
    "guide.",
    bad="""
import eventlet
eventlet.monkey_patch()
""",
    good="""
from gevent import monkey
monkey.patch_all()
""",
    references=("FM-06", "eventlet migration guide"),
    runners=Runner.PROJECT,
)
def check_eventlet_deprecated(project) -> Iterator[Hit]:
    # A fact about the project, not about each file: one finding, at the first eventlet import
    # in path order (sorted, so every run picks the same one), instead of one per module.
    for relpath in sorted(project.summaries):
        for record in project.summaries[relpath].imports:
            if record.module == "eventlet" or record.module.startswith("eventlet."):
                yield Hit(
                    path=relpath,
                    line=record.line,
                    column=record.column,
                    args={"module": record.module},
                )
                return


# -- at run time (MPA45x): what the probe saw the running process do -----------------------
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
    runners=RUNTIME,
)
def check_both_frameworks(ctx) -> Iterator[Hit]:
    first: dict[str, PatchEvent] = {}
    for patch in ctx.facts.patches:
        framework = patch.framework
        other = "eventlet" if framework == "gevent" else "gevent"
        if other in first and framework not in first:
            path, line = ctx.facts.where(patch)
            there = "{}:{}".format(*ctx.facts.where(first[other]))
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
    runners=RUNTIME,
)
def check_mixed_owners(ctx) -> Iterator[Hit]:
    from ..model.events import OwnersEvent

    event = ctx.facts.first("owners")
    owners = (event.owners if isinstance(event, OwnersEvent) else None) or {}
    frameworks = {
        name: str(module).split(".")[0]
        for name, module in owners.items()
        if str(module).split(".")[0] in ("gevent", "eventlet")
    }
    if len(set(frameworks.values())) < 2:
        return
    detail = ", ".join(f"`{name}` is {fw}'s" for name, fw in sorted(frameworks.items()))
    patch = ctx.facts.patches[-1] if ctx.facts.patches else {}
    path, line = ctx.facts.where(patch)
    yield Hit(path=path, line=line, column=1, args={"detail": detail}, evidence={"owners": owners})
