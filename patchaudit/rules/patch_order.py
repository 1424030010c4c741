"""MPA1xx, patch-order: the patch call runs too late, or in a place that makes it late."""

from __future__ import annotations

from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.source import FUNCTION, MAIN, MODULE, FileContext
from ._helpers import position
from ._model import Hit, Runner, Scope, rule

# gevent re-patches these itself when they were imported first (logging's locks), so an early
# import is not a problem on its own.
_HANDLED_BY_GEVENT = frozenset({"logging"})
# Top-level packages (and their submodules) that MPA104 does not count as early imports.
_HARMLESS_EARLY = frozenset({"__future__", "gevent", "eventlet", "sys", "os", "typing"})


def _watched(project) -> frozenset[str]:
    """Modules whose early import matters: what the installed gevent patches, minus what the
    interpreter has loaded at start-up and what gevent fixes up itself."""
    lists = project.patch_lists
    return frozenset(lists.patched_modules() - lists.startup_modules - _HANDLED_BY_GEVENT)


def _loads_patched_first(project, hit: Hit) -> bool:
    """The module's own imports load a patched module before its late patch call runs."""
    return bool(project.loaded_at_import(hit.path) & _watched(project))


def _pre_patch_imports(project) -> dict[tuple[str, int, int], dict]:
    """Group the patched modules that ran before a patch call by the import that started them."""
    watched = _watched(project)
    groups: dict[tuple[str, int, int], dict] = {}
    for sim in project.simulations:
        for name in sorted(watched & sim.executed.keys()):
            chain = sim.chain(name)
            location = _first_project_import(project, chain)
            if location is None:
                continue
            summary, record = location
            if len(chain) > 1 and chain[-2][0] in _HANDLED_BY_GEVENT:
                continue  # loaded for logging's locks, which gevent re-creates when it patches
            if record.module == name and name != "ssl":
                # `import x` holds the module, whose attributes are patched in place; what
                # `from x import y` binds is MPA201's business. What x itself loads still counts.
                continue
            key = (summary.relpath, record.line, record.column)
            group = groups.setdefault(key, {"modules": {}, "record": record, "sim": sim})
            labels = [_label(project, sim, m, via) for m, via in chain]
            group["modules"].setdefault(name, labels)
    return groups


def _first_project_import(project, chain):
    for module, via in chain:
        summary = project.summary_of(module)
        if summary is not None and via is not None:
            return summary, via
    return None


def _label(project, sim, module, via) -> str:
    summary = project.summary_of(module)
    name = summary.relpath if summary is not None else module
    if module in sim.missing:
        return f"{name} (not installed; known importer)"
    return f"{name}:{via.line}" if via is not None else name


def _import_hits(project, want_ssl: bool) -> Iterator[Hit]:
    """One hit per import statement: MPA101 when it loads ssl, MPA102 for the other modules."""
    for (path, line, column), group in _pre_patch_imports(project).items():
        modules = group["modules"]
        if ("ssl" in modules) != want_ssl:
            continue
        # gevent's private helpers (_thread, _threading_local) come along with their public module
        names = sorted(n for n in modules if not n.startswith("_"))
        if not names:
            continue
        shown = "ssl" if want_ssl else names[0]
        record, sim = group["record"], group["sim"]
        patch = project.summary_of(sim.patch_module) if sim.patch.line else None
        # where the patch call is, for the fix that moves it (patchaudit/fixes/patch_position.py)
        at = {"patch_call": f"{patch.relpath}:{sim.patch.line}:{sim.patch.column}"} if patch else {}
        yield Hit(
            path=path,
            line=line,
            column=column,
            end_line=record.end_line,
            end_column=record.end_column,
            args={
                "imported": record.module,
                "modules": ", ".join(f"`{n}`" for n in names),
                "patch": project.patch_location(sim),
            },
            evidence={"import_chain": modules[shown], "modules": names, **at},
        )


@rule(
    code="MPA101",
    name="ssl-imported-before-patch",
    category=Category.PATCH_ORDER,
    severity=Severity.ERROR,
    summary="`ssl` is imported before the monkey-patch call",
    message="importing `{imported}` loads {modules} before the patch call at {patch}",
    why="""
When `ssl` is imported before gevent patches it, any module that did `from ssl import
SSLContext` keeps the original class. Its property setters then call
`super(SSLContext, SSLContext)`, which now resolves to gevent's subclass and recurses until
`RecursionError: maximum recursion depth exceeded` (FM-01). `requests`, `urllib3`, `botocore`,
`aiohttp`, `httpx` and `jwt` all load `ssl` when imported, so the import that triggers this is
usually not `import ssl` itself. gevent only prints a MonkeyPatchWarning, and only when it finds
such a reference.
""",
    fix="Move the patch call above every other import of the entry module (first two lines), or "
    "let the server patch first (`gunicorn -k gevent` without `--preload`).",
    bad="""
import requests                      # loads urllib3.util.ssl_ -> ssl
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import requests
""",
    references=("FM-01", "FM-02", "gevent/gevent#1016", "urllib3/urllib3#1176"),
    runners=Runner.PROJECT,
)
def check_ssl_before_patch(project) -> Iterator[Hit]:
    return _import_hits(project, want_ssl=True)


@rule(
    code="MPA102",
    name="patched-module-imported-before-patch",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary="A module gevent patches is imported before the monkey-patch call",
    message="importing `{imported}` loads {modules} before the patch call at {patch}",
    why="""
gevent patches by replacing attributes of modules (`socket.socket`, `threading.Lock`,
`time.sleep`, `queue.LifoQueue`, ...). Code that ran before the patch may already hold the
originals: module-level `from x import y`, class attributes, native locks, threads. Those keep
blocking the whole process or deadlock under load, silently (FM-03, FM-04, FM-05). The modules
listed are the ones the installed gevent replaces, read from it at run time.
""",
    fix="Patch before any other import: make `from gevent import monkey; monkey.patch_all()` the "
    "first statement of the entry point, above imports of your own packages too.",
    bad="""
import logging.handlers              # loads socket, queue, threading
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import logging.handlers
""",
    references=("FM-03", "FM-04", "FM-05", "FM-02", "gevent/gevent#63"),
    runners=Runner.PROJECT,
)
def check_patched_before_patch(project) -> Iterator[Hit]:
    return _import_hits(project, want_ssl=False)


@rule(
    code="MPA103",
    name="patch-inside-function",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary="The patch call is inside a function that the module does not call at import time",
    message="`{call}()` runs only when `{function}()` is called, after this module's imports",
    why="""
A patch call inside a function runs whenever that function is called: after everything the
module imported at the top, possibly on another thread (a reloader, a server hook such as
gunicorn's `post_fork`, which runs before the worker patches). Patching late or off the main
thread leaves stale references and makes gevent warn about `KeyError` at shutdown (FM-02, FM-04).
It is reported in code that starts a program (an entry module, a gunicorn config, what they
import before patching), when the module's own imports load a module gevent patches; a
library's patch helper, called first by the application by design, and a script that imports
only `os`, `sys` and `json` before calling its patching function, are not.
""",
    fix="Call the patch function at module level as the first statement of the entry point, or "
    "call the enclosing function at the very top of the module before other imports.",
    bad="""
import requests
from gevent import monkey

def post_fork(server, worker):
    monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import requests
""",
    references=("FM-02", "FM-04", "benoitc/gunicorn#2023"),
    scope=Scope.ENTRY,
    triggers=(b"patch_", b"monkey_patch"),
    applies=_loads_patched_first,
)
def check_patch_inside_function(ctx: FileContext) -> Iterator[Hit]:
    called = {
        c.node.func.id
        for c in ctx.calls
        if c.context in (MODULE, MAIN) and hasattr(c.node.func, "id")
    }
    for point in ctx.patch_points:
        if point.context != FUNCTION or point.enclosing in called:
            continue
        yield Hit(
            line=point.line,
            column=point.column,
            args={
                "call": point.function.rsplit(".", 1)[-1],
                "function": point.enclosing or "<lambda>",
            },
        )


@rule(
    code="MPA104",
    name="patch-in-main-guard",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary='The patch call is under `if __name__ == "__main__":` after module-level imports',
    message='`{call}()` under `if __name__ == "__main__":` runs after the imports on lines {lines}',
    why="""
Everything at module level runs before the `if __name__ == "__main__":` block, so every import at
the top of the file, and everything those imports pull in, is loaded before patching (FM-04).
""",
    fix="Move the patch call to the top of the file, before the other imports; keep only the "
    "program start in the `__main__` block.",
    bad="""
import redis
from gevent import monkey

if __name__ == "__main__":
    monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import redis

if __name__ == "__main__":
    main()
""",
    references=("FM-04", "FM-01"),
    triggers=(b"__main__",),
)
def check_patch_in_main_guard(ctx: FileContext) -> Iterator[Hit]:
    early = [
        r.line
        for r in ctx.imports
        if r.context == MODULE and r.module.partition(".")[0] not in _HARMLESS_EARLY
    ]
    for point in ctx.patch_points:
        if point.context == MAIN and early:
            lines = ", ".join(str(n) for n in sorted(set(early))[:5])
            yield Hit(
                line=point.line,
                column=point.column,
                args={"call": point.function.rsplit(".", 1)[-1], "lines": lines},
            )


@rule(
    code="MPA105",
    name="patch-all-positional-arguments",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary="`patch_all()` is called with positional arguments",
    message="`patch_all()` with {count} positional argument(s); gevent 26.7 deprecated them",
    why="""
gevent 26.7.0 deprecated positional arguments to `patch_all` and will accept keywords only. A
positional call is also hard to read: `patch_all(True, True, False)` silently turns off `time`
patching, a partial patch (FM-07). See the failure-mode catalogue, section 1.1.
""",
    fix="Pass keywords only, for example `patch_all(thread=False)`, or better `patch_all()`.",
    bad="""
from gevent import monkey
monkey.patch_all(True, True, False)
""",
    good="""
from gevent import monkey
monkey.patch_all()
""",
    references=("FM-07", "gevent 26.7.0 changelog"),
    triggers=(b"patch_all",),
)
def check_positional(ctx: FileContext) -> Iterator[Hit]:
    for point in ctx.patch_points:
        if point.function == "gevent.monkey.patch_all" and point.positional:
            yield Hit(line=point.line, column=point.column, args={"count": point.positional})


_THREAD_STARTERS = {
    "threading.Thread": "a native thread",
    "threading.Timer": "a native timer thread",
    "concurrent.futures.ThreadPoolExecutor": "a native thread pool",
    "sentry_sdk.init": "Sentry's background worker thread",
    "_thread.start_new_thread": "a native thread",
}


@rule(
    code="MPA106",
    name="thread-started-before-patch",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary="A thread, thread pool or SDK worker is created before the monkey-patch call",
    message="`{call}()` creates {what} before the patch call",
    why="""
A thread started before patching is a real OS thread that greenlets later share locks and
queues with; gevent skips re-owning locks when more than one thread exists at patch time, and
the process may hang at exit or deadlock (FM-04, FM-05). SDKs such as Sentry start such a worker
in `init()` (FM-24).
""",
    fix="Create threads, pools and SDK clients after the patch call (move `init()` below it).",
    bad="""
import sentry_sdk
sentry_sdk.init(dsn="...")
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import sentry_sdk
sentry_sdk.init(dsn="...")
""",
    references=("FM-04", "FM-05", "FM-24"),
    scope=Scope.PRE_PATCH,
    triggers=(b"Thread", b"Timer", b"sentry_sdk", b"start_new_thread"),
)
def check_thread_before_patch(ctx: FileContext) -> Iterator[Hit]:
    for call in ctx.calls:
        what = _THREAD_STARTERS.get(call.qualname or "")
        if what and call.context in (MODULE, MAIN):
            pos = position(call.node)
            yield Hit(
                line=pos["line"],
                column=pos["column"],
                context=call.context,
                args={"call": call.qualname, "what": what},
            )


@rule(
    code="MPA107",
    name="launcher-imported-before-patch",
    category=Category.PATCH_ORDER,
    severity=Severity.INFO,
    summary="The test runner imported patched modules before the suite's patch call",
    message="pytest imported {modules} before this patch; launch the suite with "
    "`python -m gevent.monkey --module pytest`",
    why="""
pytest imports `socket`, `select`, `signal`, `subprocess` and `threading` for itself before it
loads any conftest or test module, so a `patch_all()` in `conftest.py` always comes after them
(FM-22). The modules are patched in place and most code sees the patched versions, but
whatever pytest bound first stays native. Moving imports in the conftest cannot change this;
only patching before pytest starts can. It is one note per test suite, not a warning per file.
""",
    fix="Run the suite as `python -m gevent.monkey --module pytest ...` (patches before pytest "
    "imports anything), or keep the conftest patch and accept pytest's own native objects.",
    bad="""
# conftest.py, run by `pytest`
from gevent import monkey
monkey.patch_all()
""",
    good="""
# run by `python -m gevent.monkey --module pytest`
import pytest
""",
    references=("FM-22", "FM-02", "pytest-dev/pytest#6210", "gevent/gevent#1481"),
    runners=Runner.PROJECT,
)
def check_launcher_loaded_first(project) -> Iterator[Hit]:
    watched = _watched(project)
    loaded = sorted(m for m in project.launcher_loads.get("pytest", ()) if m in watched)
    loaded = [m for m in loaded if not m.startswith("_")]
    for program in project.programs:
        if program.kind != "pytest" or not loaded:
            continue
        roots = {project.summary_of(k).relpath for k in program.roots if project.summary_of(k)}
        points = sorted(
            (s.relpath, p.line, p.column)
            for s, p in program.patch_points()
            if s.relpath in roots and p.context == MODULE
        )
        if points:
            path, line, column = points[0]
            yield Hit(
                path=path,
                line=line,
                column=column,
                args={"modules": ", ".join(f"`{m}`" for m in loaded)},
                evidence={"launcher": "pytest", "modules": loaded},
            )
