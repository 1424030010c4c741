"""MPA30x partial-patch and MPA35x library-patches: how, and by whom, patching is invoked."""

from __future__ import annotations

from collections.abc import Iterator

from .._findings import Category, Severity
from ..static._context import MAIN, MODULE, FileContext
from ..static._known import known_patchers
from ..static._project import module_key
from ._model import Hit, rule

# Options whose absence leaves part of the program blocking or on native threads.
_IMPORTANT_OPTIONS = (
    "thread",
    "socket",
    "os",
    "select",
    "ssl",
    "queue",
    "signal",
    "subprocess",
    "time",
    "dns",
)


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
it turned off.
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
    kind="project",
)
def check_partial_patch_all(project) -> Iterator[Hit]:
    lists = project.patch_lists
    for summary, point in project.all_patch_points():
        if point.function != "gevent.monkey.patch_all":
            continue
        disabled = [k for k in _IMPORTANT_OPTIONS if point.keyword(k) is False]
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
            evidence={"disabled": disabled, "unpatched_modules": modules, "used": used},
        )


@rule(
    code="MPA302",
    name="individual-patch-call",
    category=Category.PARTIAL_PATCH,
    severity=Severity.WARNING,
    summary="A single `patch_*()` function is used instead of `patch_all()`",
    message="`{call}()` patches only part of the standard library",
    why="""
Patching one module (`patch_socket()`) leaves threads, locks, `select` and `ssl` native. Code that
mixes them crashes or blocks: gevent#1009 is a crash after `patch_socket()` alone (FM-07).
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
    message="`{module}` patches when imported (imported by {importers}); "
    "patching belongs in the entry point",
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
    kind="project",
)
def check_patch_in_imported_module(project) -> Iterator[Hit]:
    from ..static._evaluate import is_entry_point

    importers: dict[str, set[str]] = {}
    for summary in project.modules.values():
        for record in summary.imports:
            for target in (record.module, *(f"{record.module}.{n}" for n in record.names)):
                importers.setdefault(target, set()).add(summary.relpath)
    for summary in project.modules.values():
        key = module_key(summary)
        users = sorted(importers.get(key, set()) - {summary.relpath})
        if not users or is_entry_point(summary, project.config.entry_points):
            continue
        if summary.module is None or summary.module.endswith("__main__"):
            continue
        for point in summary.patch_points:
            if point.context == MODULE:
                yield Hit(
                    path=summary.relpath,
                    line=point.line,
                    column=point.column,
                    args={"module": key, "importers": ", ".join(users[:3])},
                    evidence={"importers": users},
                )


@rule(
    code="MPA352",
    name="imports-patching-library",
    category=Category.LIBRARY_PATCHES,
    severity=Severity.WARNING,
    summary="An imported package monkey-patches the process when it is imported",
    message="importing `{module}` runs `{call}` at import time",
    why="""
Some packages (grequests, locust, older ws4py clients) call `patch_all()` themselves when
imported, often with partial arguments such as `thread=False`. The patch then happens wherever
the import is, after much of the program has loaded, and possibly with settings that differ from
the application's own call (FM-08). patchaudit reads installed packages' source to find such
calls, and keeps a table for packages that are not installed.
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
    kind="project",
)
def check_imports_patching_library(project) -> Iterator[Hit]:
    table = known_patchers()
    for summary in project.summaries.values():
        if summary.relpath.rpartition("/")[2].startswith("locustfile"):
            continue  # locust's CLI has patched before it imports a locustfile
        patched = _full_patch_lines(summary)
        for record in summary.imports:
            if record.context not in (MODULE, MAIN) or project.summary_of(record.module):
                continue
            if any(n < record.line and c in (MODULE, record.context) for n, c in patched):
                continue  # the file patched fully first: the library's own call changes nothing
            node = project.index.get(record.module)
            points = [p for p in node.patch_points if p.context == MODULE] if node else []
            if points:
                call = f"{points[0].function}()"
                source = f"{node.path}:{points[0].line}"
            elif node is None and record.module in table:
                call = table[record.module]["call"]
                source = f"not installed; known patcher ({table[record.module]['evidence']})"
            else:
                continue
            yield Hit(
                path=summary.relpath,
                line=record.line,
                column=record.column,
                args={"module": record.module, "call": call},
                evidence={"patch_call": source},
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
