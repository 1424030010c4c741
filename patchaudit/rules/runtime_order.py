"""Runtime rules about the order of patching and importing (MPA151, MPA152).

The other runtime halves of the families sit with their static rules: MPA251 in
:mod:`.stale_runtime`, MPA31x in :mod:`.patch_calls`, MPA45x/65x/75x/85x likewise.

These read what the probe saw in a real child process (`patchaudit TARGET`), so they know what
third-party packages imported, what ran before `__main__`, and which references survived.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.machinery import is_machinery
from ._model import RUNTIME, Hit, rule

# gevent re-owns logging's locks itself when logging was imported first.
_HANDLED_BY_GEVENT = frozenset({"logging"})


def _imported_directly(ctx, importer: str, module: str) -> bool:
    path = ctx.facts.module_file(importer)
    return ctx.facts.is_app_file(path) and ctx.facts.import_line(path, module) is not None


def _warnings(ctx) -> list[dict]:
    return [w for p in ctx.facts.patches for w in p.warnings or []]


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
    runners=RUNTIME,
)
def check_loaded_before_patch(ctx) -> Iterator[Hit]:
    facts = ctx.facts
    if facts.first_patch is None:
        return
    watched = ctx.patched_modules - ctx.startup_modules - _HANDLED_BY_GEVENT
    stale_modules = {(e.original or "").rpartition(".")[0] for e in ctx.real_stale()}
    gevent_warned = bool(_warnings(ctx))
    # A real launcher (`patchaudit run -- gunicorn -k gevent ...`) imports its own modules before
    # its worker patches; only what the application's code loaded is the application's doing.
    patched_in = facts.first_patch.file
    launcher_patched = patched_in == "<launcher>" or facts.is_installed_file(patched_in)
    groups: dict[tuple[str, int], dict[str, list[str]]] = {}
    for module in facts.loaded_before_patch():
        if module not in watched or module.startswith("_"):
            continue
        chain = facts.shortest_chain(module)
        if any(is_machinery(step) for step in chain[:-1]):
            continue  # loaded by gevent/eventlet themselves while patching
        if module != "ssl" and len(chain) >= 2 and _imported_directly(ctx, chain[-2], module):
            # `import x` holds the module, whose attributes are patched in place; bindings of
            # its objects are MPA251's business (the same line the static MPA102 draws)
            continue
        location = facts.app_import_site(chain, outermost=True)
        if location is None:
            if not launcher_patched:
                location = facts.patch_place()
            else:  # the launcher loaded it and the launcher patched: not the app's to change
                continue
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
    runners=RUNTIME,
)
def check_gevent_warning(ctx) -> Iterator[Hit]:
    for patch in ctx.facts.patches:
        for warning in patch.warnings or []:
            text = " ".join(str(warning.get("message", "")).split())
            # where gevent says the problem is, else the patch call that warned
            yield Hit(
                path=ctx.facts.display(warning.get("file") or patch.file),
                line=int(warning.get("line") or patch.line or 1),
                column=1,
                args={"text": text[:300]},
                evidence={"warning": text},
            )
