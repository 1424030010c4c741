"""MPA30x partial-patch and MPA35x library-patches: how, and by whom, patching is invoked.

MPA311-313 are the same questions asked of the running process (gevent's recorded settings,
the patching thread, the threads already alive).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.known import known_patch_points, known_patchers
from ..model.machinery import IMPORTANT_PATCH_OPTIONS
from ..model.source import MAIN, MODULE, FileContext, PatchPoint, module_key
from ._model import RUNTIME, Hit, Runner, Scope, rule


def disabled_options(point: PatchPoint) -> list[str]:
    """The options of a `patch_all()` call that turn off patching a subsystem."""
    return [k for k in IMPORTANT_PATCH_OPTIONS if point.keyword(k) is False]


def call_text(point: PatchPoint) -> str:
    """`patch_all(thread=False, select=False)`: the call as it reads, literal keywords only."""
    arguments = ", ".join(f"{k}={v!r}" for k, v in point.keywords if v != "?")
    return f"{point.function.rsplit('.', 1)[-1]}({arguments})"


@rule(
    code="MPA301",
    name="partial-patch-all",
    category=Category.PARTIAL_PATCH,
    severity=Severity.WARNING,
    summary="`patch_all()` turns off part of the patching",
    message="`patch_all({disabled})` leaves {modules} unpatched{usage}",
    why="""
gevent's patches depend on each other: with `thread=False`, native threads share gevent sockets
and hub objects (`greenlet.error: cannot switch to a different thread`); without `os`, SIGCHLD
handling breaks; without `socket` or `select`, I/O blocks every greenlet (FM-07). Library gevent
integrations assume a full patch. The finding is an error when the project uses the subsystem
it turned off. Test code, where `thread=False` keeps pytest's own threads native, is not
reported. Options spread from a literal dict (`patch_all(**settings.GEVENT_PATCH)`, with
the dict in a project module or Django settings) count as written in the call.
""",
    fix="Call `patch_all()` with no arguments. If a subsystem must stay native, isolate that code "
    "in a separate process instead of a partially patched one.",
    bad="""
from gevent import monkey
monkey.patch_all(thread=False)
import threading
""",
    good="""
from gevent import monkey
monkey.patch_all()
import threading
""",
    references=("FM-07", "gevent/gevent#1862", "locustio/locust#2250"),
    runners=Runner.PROJECT,
    # a settings module holding `{"thread": False}` for a `patch_all(**...)` elsewhere is parsed
    triggers=tuple(
        form % name.encode()
        for name in IMPORTANT_PATCH_OPTIONS
        for form in (b'"%s": False', b"'%s': False", b"%s=False")
    ),
)
def check_partial_patch_all(project) -> Iterator[Hit]:
    lists = project.patch_lists
    for summary, point in project.all_patch_points():
        if point.function != "gevent.monkey.patch_all" or project.is_test_code(summary):
            continue  # a suite may keep pytest's own threads native with thread=False
        point, settings = _with_spread_settings(project, summary, point)
        disabled = disabled_options(point)
        if not disabled:
            continue
        modules = sorted(
            {m for k in disabled for m in lists.by_option.get(k, {}) if not m.startswith("_")}
            - {"logging"}  # gevent touches only logging's locks, as part of `thread`
            or set(disabled)
        )
        programs = project.programs_of(summary)
        used = sorted(m for m in modules if any(any(True for _ in p.imports(m)) for p in programs))
        yield Hit(
            path=summary.relpath,
            line=point.line,
            column=point.column,
            severity=Severity.ERROR if used else None,
            args={
                "disabled": ", ".join(f"{k}=False" for k in disabled),
                "modules": ", ".join(f"`{m}`" for m in modules),
                "usage": f" and the program uses {', '.join(used)}" if used else "",
            },
            evidence={
                "disabled": disabled,
                "unpatched_modules": modules,
                "used": used,
                **({"settings": settings} if settings else {}),
            },
        )


def _with_spread_settings(project, summary, point: PatchPoint) -> tuple[PatchPoint, list[str]]:
    """`patch_all(**settings.GEVENT_PATCH)`: the call with the literal options it spreads, and
    where they are; a `**` argument that names no literal dict adds nothing."""
    spread: list[tuple[str, object]] = []
    where: list[str] = []
    for name in point.spread:
        found = project.option_dict(summary, name)
        if found is not None:
            spread.extend(found[0].items())
            where.append(found[1])
    if not spread:
        return point, []
    return dataclasses.replace(point, keywords=(*spread, *point.keywords)), where


@rule(
    code="MPA302",
    name="individual-patch-call",
    category=Category.PARTIAL_PATCH,
    severity=Severity.WARNING,
    summary="A single `patch_*()` function is used instead of `patch_all()`",
    message="`{call}()` patches only part of the standard library",
    why="""
Patching one module (`patch_socket()`) leaves threads, locks, `select` and `ssl` native. Code that
mixes them crashes or blocks: gevent#1009 is a crash after `patch_socket()` alone (FM-07). It is
reported in code that starts a program; a library's documented minimal-patch helper is the
library's design, and the application chooses whether to call it.
""",
    fix="Use `monkey.patch_all()`; it applies the patches in the order gevent requires.",
    bad="""
from gevent import monkey
monkey.patch_socket()
""",
    good="""
from gevent import monkey
monkey.patch_all()
""",
    references=("FM-07", "gevent/gevent#1009"),
    scope=Scope.ENTRY,
    triggers=(b"patch_",),
)
def check_individual_patch(ctx: FileContext) -> Iterator[Hit]:
    full = [p.line for p in ctx.patch_points if p.function == "gevent.monkey.patch_all"]
    for point in ctx.patch_points:
        if point.framework != "gevent" or point.function == "gevent.monkey.patch_all":
            continue
        if any(line <= point.line for line in full):
            continue  # an extra patch after a full one changes nothing
        yield Hit(
            line=point.line, column=point.column, args={"call": point.function.rsplit(".", 1)[-1]}
        )


@rule(
    code="MPA351",
    name="patch-in-imported-module",
    category=Category.LIBRARY_PATCHES,
    severity=Severity.WARNING,
    summary="A module that other modules import patches at import time",
    message="`{module}` patches when imported ({importers}); patching belongs in the entry point",
    why="""
A patch call that runs when a module is imported happens wherever that import happens to be,
usually too late and sometimes twice with different arguments (`Patching more than once will
result in the union of all True parameters`). grequests does this and breaks celery, redis and
multiprocessing in programs that merely import it (FM-08).
""",
    fix="Patch only in entry points (`wsgi.py`, `__main__`, the server config); list a deliberate "
    "patching module in `[tool.patchaudit] entry-points`.",
    bad="""
# mylib/http.py, imported by the application
from gevent import monkey
monkey.patch_all()
""",
    good="""
# app/wsgi.py, the entry point
from gevent import monkey
monkey.patch_all()
import mylib.http
""",
    references=("FM-08", "spyoungtech/grequests#55"),
    runners=Runner.PROJECT,
)
def check_patch_in_imported_module(project) -> Iterator[Hit]:
    importers: dict[str, set[str]] = {}
    for summary in project.modules.values():
        for record in summary.imports:
            for target in (record.module, *(f"{record.module}.{n}" for n in record.names)):
                importers.setdefault(target, set()).add(summary.relpath)
    for summary in project.modules.values():
        if summary.module is None or summary.module.endswith("__main__"):
            continue
        points = [p for p in summary.patch_points if p.context == MODULE]
        if not points or project.starts_own_program(summary):
            continue
        key = module_key(summary.module, summary.relpath)
        users = sorted(importers.get(key, set()) - {summary.relpath})
        if users and all(_inside(u, summary) for u in users) and _patches_first(summary, points):
            continue  # a package that patches first thing: its own submodules always run it first
        if project.is_test_code(summary):
            continue  # test helpers patch for the suite, which pytest starts
        shown = (
            "imported by " + ", ".join(users[:3])
            if users
            else "a module the project ships, so in every application that imports it"
        )
        for point in points:
            yield Hit(
                path=summary.relpath,
                line=point.line,
                column=point.column,
                args={"module": key, "importers": shown},
                evidence={"importers": users},
            )


def _inside(relpath: str, package: object) -> bool:
    folder = package.relpath.rpartition("/")[0]  # type: ignore[attr-defined]
    return package.is_package and relpath.startswith(folder + "/")  # type: ignore[attr-defined]


def _patches_first(summary, points: list[PatchPoint]) -> bool:
    """The module's first patch runs before it imports anything but the framework and stdlib
    basics: whoever imports it is patched before anything else of the package loads."""
    first = min(p.line for p in points)
    harmless = {"__future__", "gevent", "eventlet", "os", "sys"}
    return all(
        r.line >= first or r.module.split(".")[0] in harmless
        for r in summary.imports
        if r.context == MODULE and not r.conditional  # a branch that exits is not the path
    )


@rule(
    code="MPA352",
    name="imports-patching-library",
    category=Category.LIBRARY_PATCHES,
    severity=Severity.WARNING,
    summary="An imported package patches the process partially when it is imported",
    message="importing `{module}` runs `{call}` at import time: a partial patch of the process",
    why="""
Some packages (grequests, locust, older ws4py clients) call `patch_all()` themselves when
imported. Such an import is a patch point like the application's own call: whatever was
imported before it is reported as patch-order (MPA101, MPA102) with the import chain. This rule
reports the packages whose call turns part of the patching off, such as grequests'
`patch_all(thread=False, select=False)`: native threads and `select` then sit next to gevent
sockets for the whole process, and celery, redis and multiprocessing break (FM-08). patchaudit
reads installed packages' source to find such calls, and keeps a table for packages that are
not installed. A program whose launcher has patched fully first (locust's CLI, a gunicorn gevent
worker) is not reported: gevent applies a second call as the union of both.
""",
    fix="Patch first in the entry point, before importing the package; for locust set "
    "`LOCUST_SKIP_MONKEY_PATCH=1` if your launcher already patches.",
    bad="""
import grequests                     # patch_all(thread=False, select=False)
""",
    good="""
from gevent import monkey
monkey.patch_all()
import grequests
""",
    references=("FM-08", "spyoungtech/grequests#55", "locustio/locust#2250"),
    runners=Runner.PROJECT,
)
def check_imports_patching_library(project) -> Iterator[Hit]:
    table = known_patchers()
    for summary in project.summaries.values():
        programs = project.programs_of(summary)
        if programs and all(p.patched_by for p in programs):
            continue  # its launcher patched fully first (locust, gunicorn -k gevent)
        patched = _full_patch_lines(summary)
        for record in summary.imports:
            if record.context not in (MODULE, MAIN) or project.summary_of(record.module):
                continue
            if any(n < record.line and c in (MODULE, record.context) for n, c in patched):
                continue  # the file patched fully first: the library's own call changes nothing
            node = project.index.get(record.module)
            points = [p for p in node.patch_points if p.context == MODULE] if node else []
            if points:
                point, source = points[0], f"{node.path}:{points[0].line}"
            elif node is None and record.module in table:
                point = known_patch_points()[record.module]
                source = f"not installed; known patcher ({table[record.module]['evidence']})"
            else:
                continue
            disabled = disabled_options(point)
            if not disabled:
                continue  # a full patch: MPA101/MPA102 judge what was imported before it
            yield Hit(
                path=summary.relpath,
                line=record.line,
                column=record.column,
                args={"module": record.module, "call": call_text(point)},
                evidence={"patch_call": source, "disabled": disabled},
            )


def _full_patch_lines(summary) -> list[tuple[int, str]]:
    """(line, context) of this file's import-time `patch_all()` calls that turn nothing off.

    gevent applies a second `patch_all` as the union of both calls' True options, so a library that
    patches on import after such a call (`patch_all(thread=False)` in grequests) changes nothing.
    """
    return [
        (p.line, p.context)
        for p in summary.patch_points
        if p.function == "gevent.monkey.patch_all"
        and p.context in (MODULE, MAIN)
        and not p.positional
        and all(value is True for _, value in p.keywords)
    ]


# -- at run time (MPA311-313): how the running process was patched -------------------------
@rule(
    code="MPA311",
    name="partial-patch-at-runtime",
    category=Category.PARTIAL_PATCH,
    severity=Severity.WARNING,
    summary="The running app was patched with parts turned off",
    message="the process was patched with {disabled}",
    why="""
The settings gevent recorded for the process (the union of every `patch_all` call, including
ones made by libraries) turn parts of the patch off. Native threads then share gevent objects
(`cannot switch to a different thread`), sockets or selects block, SIGCHLD handling breaks
(FM-07).
""",
    fix="Patch with `patch_all()` and no arguments, once, at the start.",
    bad="""
from gevent import monkey
monkey.patch_all(thread=False)
""",
    good="""
from gevent import monkey
monkey.patch_all()
""",
    references=("FM-07", "FM-08"),
    runners=RUNTIME,
)
def check_partial(ctx) -> Iterator[Hit]:
    from ..model.events import SettingsEvent

    settings = ctx.facts.first("settings")
    if not isinstance(settings, SettingsEvent):
        return
    values = settings.settings or {}
    disabled = [k for k in IMPORTANT_PATCH_OPTIONS if values.get(k) is False]
    if not disabled:
        return
    path, line = ctx.facts.patch_place()
    for patch in ctx.facts.patches:
        kwargs = patch.kwargs or {}
        if any(str(kwargs.get(k)) == "False" for k in disabled):
            path, line = ctx.facts.where(patch)
            break
    yield Hit(
        path=path,
        line=line,
        column=1,
        args={"disabled": ", ".join(f"{k}=False" for k in disabled)},
        evidence={"settings": values},
    )


@rule(
    code="MPA312",
    name="patched-off-main-thread",
    category=Category.PARTIAL_PATCH,
    severity=Severity.ERROR,
    summary="The process was patched from a thread other than the main thread",
    message="`{function}()` ran on a thread other than the main thread",
    why="""
Patching from a non-main thread (a reloader, an IDE runner, a server hook) leaves
`threading.main_thread()` unpatched: joins from greenlets hang and `KeyError` is printed at exit;
gevent warns "Monkey-patching outside the main native thread" (FM-04).
""",
    fix="Patch on the main thread before any thread starts: first lines of the entry point.",
    bad="""
import threading
threading.Thread(target=lambda: __import__("gevent.monkey").monkey.patch_all()).start()
""",
    good="""
from gevent import monkey
monkey.patch_all()
""",
    references=("FM-04", "miguelgrinberg/Flask-SocketIO#901"),
    runners=RUNTIME,
)
def check_off_main_thread(ctx) -> Iterator[Hit]:
    for patch in ctx.facts.patches:
        if patch.main_thread is False:
            path, line = ctx.facts.where(patch)
            yield Hit(
                path=path,
                line=line,
                column=1,
                args={"function": patch.function or "patch_all"},
            )


@rule(
    code="MPA313",
    name="threads-alive-at-patch",
    category=Category.PARTIAL_PATCH,
    severity=Severity.WARNING,
    summary="Other threads were already running when the process was patched",
    message="{count} thread(s) already running when patching: {threads}",
    why="""
Threads started before patching are real OS threads that greenlets will share locks and queues
with; gevent skips re-owning existing locks when more than one thread is alive, so pre-existing
locks stay native (FM-04, FM-05). SDK workers (Sentry, APM agents) started at import are the
usual source (FM-24).
""",
    fix="Start threads and SDK clients after the patch call.",
    bad="""
import sentry_sdk; sentry_sdk.init(dsn)     # starts a worker thread
from gevent import monkey; monkey.patch_all()
""",
    good="""
from gevent import monkey; monkey.patch_all()
import sentry_sdk; sentry_sdk.init(dsn)
""",
    references=("FM-04", "FM-05", "FM-24"),
    runners=RUNTIME,
)
def check_threads_alive(ctx) -> Iterator[Hit]:
    patch = ctx.facts.first_patch
    if patch is None:
        return
    others = [t for t in patch.threads or [] if t != "MainThread"]
    if others:
        path, line = ctx.facts.where(patch)
        yield Hit(
            path=path,
            line=line,
            column=1,
            args={"count": len(others), "threads": ", ".join(others[:5])},
            evidence={"threads": others},
        )
