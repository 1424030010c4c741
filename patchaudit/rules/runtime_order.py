"""Runtime rules about when and how the process was patched (MPA15x, MPA25x, MPA31x).

These read what the probe saw in a real child process (`patchaudit TARGET`), so they know what
third-party packages imported, what ran before `__main__`, and which references survived.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

from .._findings import Category, Severity
from ._model import Hit, rule

# gevent re-owns logging's locks itself when logging was imported first.
_HANDLED_BY_GEVENT = frozenset({"logging"})
_PATCHER_PREFIXES = ("gevent", "zope", "greenlet", "eventlet", "<patchaudit")


def _importer_location(ctx, chain: list[str]) -> tuple[str, int] | None:
    """The import statement in the outermost application module on the chain."""
    facts = ctx.facts
    for importer, imported in pairwise(chain):
        path = facts.module_file(importer)
        if facts.is_app_file(path):
            line = facts.import_site(importer, imported)
            if line is not None:
                return facts.display(path), line
    return None


def _imported_directly(ctx, importer: str, module: str) -> bool:
    path = ctx.facts.module_file(importer)
    return ctx.facts.is_app_file(path) and ctx.facts.import_line(path, module) is not None


def _fallback_location(ctx) -> tuple[str, int]:
    patch = ctx.facts.first_patch or {}
    return ctx.facts.display(patch.get("file")), int(patch.get("line") or 1)


def _warnings(ctx) -> list[dict]:
    return [w for p in ctx.facts.patches for w in p.get("warnings", [])]


@rule(
    code="MPA151",
    name="loaded-before-patch-at-runtime",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary="The running app loaded a module gevent patches before the first patch call",
    message="{modules} loaded before the patch at {patch}, via {via}",
    why="""
Observed in a real import of the application: a module that gevent patches was already loaded
when the first patch call ran. Objects captured from it before the patch stay unpatched:
`ssl` leads to `RecursionError` (FM-01), the others to silent blocking and native locks (FM-03,
FM-05). The finding is an error when the harm is confirmed: a stale reference into that module
survived, or gevent itself warned. Servers that patch after importing the app (gunicorn with
`--preload`, uWSGI's `gevent-monkey-patch`) cause exactly this (FM-02).
""",
    fix="Patch before anything else: first lines of the entry point, or let the server patch "
    "first (no `--preload`; uWSGI `gevent-early-monkey-patch`).",
    bad="""
# app/__init__.py
import urllib.request          # loads socket, ssl
# app/wsgi.py
from gevent import monkey; monkey.patch_all()
""",
    good="""
# app/wsgi.py
from gevent import monkey; monkey.patch_all()
import app
""",
    references=("FM-01", "FM-02", "FM-03", "FM-05"),
    kind="runtime",
)
def check_loaded_before_patch(ctx) -> Iterator[Hit]:
    facts = ctx.facts
    if facts.first_patch is None:
        return
    watched = ctx.patched_modules - ctx.startup_modules - _HANDLED_BY_GEVENT
    stale_modules = {e.get("original", "").rpartition(".")[0] for e in _real_stale(ctx)}
    gevent_warned = bool(_warnings(ctx))
    groups: dict[tuple[str, int], dict[str, list[str]]] = {}
    for module in facts.loaded_before_patch():
        if module not in watched or module.startswith("_"):
            continue
        chain = facts.shortest_chain(module)
        if any(step.startswith(_PATCHER_PREFIXES) for step in chain[:-1]):
            continue  # loaded by gevent/eventlet themselves while patching
        if module != "ssl" and len(chain) >= 2 and _imported_directly(ctx, chain[-2], module):
            # `import x` holds the module, whose attributes are patched in place; bindings of
            # its objects are MPA251's business (the same line the static MPA102 draws)
            continue
        location = _importer_location(ctx, chain) or _fallback_location(ctx)
        groups.setdefault(location, {})[module] = chain
    for (path, line), modules in groups.items():
        names = sorted(modules)
        shown = "ssl" if "ssl" in modules else names[0]
        confirmed = any(m in stale_modules for m in names) or ("ssl" in modules and gevent_warned)
        yield Hit(
            path=path,
            line=line,
            column=1,
            severity=Severity.ERROR if confirmed else None,
            args={
                "modules": ", ".join(f"`{m}`" for m in names),
                "patch": facts.patch_location(),
                "via": " -> ".join(modules[shown]),
            },
            evidence={"import_chain": modules[shown], "modules": names, "confirmed": confirmed},
        )


@rule(
    code="MPA152",
    name="gevent-monkey-patch-warning",
    category=Category.PATCH_ORDER,
    severity=Severity.ERROR,
    summary="gevent itself warned while patching the running app",
    message="gevent warned: {text}",
    why="""
gevent emits `MonkeyPatchWarning` when it can prove something went wrong while patching: `ssl`
imported first with direct references still held (FM-01), patching more than once with
different arguments (FM-08), patching signal without os (FM-07), or patching off the main thread
(FM-04). Such warnings scroll past in server logs; patchaudit captures them with their location.
""",
    fix="Follow the warning: patch earlier, once, fully and on the main thread.",
    bad="""
import ssl
from gevent import monkey
monkey.patch_all()      # MonkeyPatchWarning: Monkey-patching ssl after ssl has already...
""",
    good="""
from gevent import monkey
monkey.patch_all()
import ssl
""",
    references=("FM-01", "FM-04", "FM-07", "FM-08", "gevent/gevent#1016"),
    kind="runtime",
)
def check_gevent_warning(ctx) -> Iterator[Hit]:
    for patch in ctx.facts.patches:
        for warning in patch.get("warnings", []):
            text = " ".join(str(warning.get("message", "")).split())
            yield Hit(
                path=ctx.facts.display(warning.get("file") or patch.get("file")),
                line=int(warning.get("line") or patch.get("line") or 1),
                column=1,
                args={"text": text[:300]},
                evidence={"warning": text},
            )


def _real_stale(ctx) -> list[dict]:
    """Stale references minus the noise floor (those a patch-first run has too)."""
    noise = ctx.baseline_stale()
    events = [
        e
        for e in ctx.facts.all("stale")
        if (e.get("holder"), e.get("name"), e.get("original")) not in noise
    ]
    if ctx.baseline is None:  # without a baseline, only the application's own holders are sure
        events = [e for e in events if ctx.facts.is_app_file(e.get("holder_file"))]
    return events


_HARM = {
    "ssl": "recurses until RecursionError when configured",
    "threading": "is a native lock or thread that blocks every greenlet",
    "_thread": "is a native lock or thread that blocks every greenlet",
    "queue": "uses native locks that deadlock greenlets",
}


@rule(
    code="MPA251",
    name="stale-reference-at-runtime",
    category=Category.STALE_REFERENCE,
    severity=Severity.ERROR,
    summary="After patching, the running app still holds an original, unpatched object",
    message="`{holder}.{name}` is still the original `{original}` after patching; it {harm}",
    why="""
Found by scanning the live process after patching: every original object gevent replaced is
looked up with the garbage collector, and each module global, class attribute or subclass that
still refers to it is reported, minus the references that exist even when patching first (the
noise floor, measured in a second patch-first run). gevent does this only for `ssl.SSLContext`
(FM-03, FM-01).
""",
    fix="Patch before the holder's module is imported; or look the object up at call time "
    "(`time.sleep(...)`) instead of binding it at import (`from time import sleep`).",
    bad="""
from time import sleep     # bound before patching
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
from time import sleep
""",
    references=("FM-03", "FM-01", "FM-18"),
    kind="runtime",
)
def check_stale_reference(ctx) -> Iterator[Hit]:
    facts = ctx.facts
    for event in _real_stale(ctx):
        holder_file = event.get("holder_file")
        if not facts.is_app_file(holder_file):
            continue  # third-party holders show up as evidence of MPA151 instead
        owner = event["holder"].rpartition(".")[2] if event.get("holder_kind") == "class" else None
        name = event.get("name", "")
        lookup = owner if event.get("holder_kind") != "subclass" else None
        binding = (
            name if event.get("holder_kind") != "subclass" else event["holder"].rpartition(".")[2]
        )
        line = facts.binding_line(holder_file, binding, lookup) or 1
        module = event.get("original", "").partition(".")[0]
        yield Hit(
            path=facts.display(holder_file),
            line=line,
            column=1,
            args={
                "holder": event.get("holder"),
                "name": name,
                "original": event.get("original"),
                "harm": _HARM.get(module, "blocks the whole process instead of yielding"),
            },
            evidence={"holder_kind": event.get("holder_kind"), "original": event.get("original")},
        )


_IMPORTANT = ("thread", "socket", "os", "select", "ssl", "queue", "signal", "subprocess", "time")


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
    kind="runtime",
)
def check_partial(ctx) -> Iterator[Hit]:
    settings = ctx.facts.first("settings")
    if not settings:
        return
    values = settings.get("settings") or {}
    disabled = [k for k in _IMPORTANT if values.get(k) is False]
    if not disabled:
        return
    path, line = _fallback_location(ctx)
    for patch in ctx.facts.patches:
        kwargs = patch.get("kwargs") or {}
        if any(str(kwargs.get(k)) == "False" for k in disabled):
            path, line = ctx.facts.display(patch.get("file")), int(patch.get("line") or 1)
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
    kind="runtime",
)
def check_off_main_thread(ctx) -> Iterator[Hit]:
    for patch in ctx.facts.patches:
        if patch.get("main_thread") is False:
            yield Hit(
                path=ctx.facts.display(patch.get("file")),
                line=int(patch.get("line") or 1),
                column=1,
                args={"function": patch.get("function", "patch_all")},
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
    kind="runtime",
)
def check_threads_alive(ctx) -> Iterator[Hit]:
    patch = ctx.facts.first_patch
    if patch is None:
        return
    others = [t for t in patch.get("threads", []) if t != "MainThread"]
    if others:
        yield Hit(
            path=ctx.facts.display(patch.get("file")),
            line=int(patch.get("line") or 1),
            column=1,
            args={"count": len(others), "threads": ", ".join(others[:5])},
            evidence={"threads": others},
        )
