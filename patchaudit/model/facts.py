"""Structured facts from a recorded process's events, with the questions the runtime rules ask.

The probe of `patchaudit TARGET` and the pytest plugin report what happened (imports with their
importers, patch calls, references still held, hub blocks); this module answers "through which
chain was X loaded", "which app line imported it", "where is this event", "which line bound
this name" and "is this frame the application's own code", which need the source on disk.
:meth:`RuntimeContext.observe` is the one way to build what the runtime rules look at.

Part of the leaf :mod:`patchaudit.model` layer: the pytest plugin builds its context without
importing the runtime audit (or the static engine it runs).
"""

from __future__ import annotations

import ast
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from .events import Event, ImportEvent, PatchEvent, SettingsEvent, StaleEvent, parse

TARGET_IMPORTER = "<target>"
_UNKNOWN = "<unknown>"
#: eventlet's ``already_patched`` groups -> the modules they replace things in.
_EVENTLET_GROUPS = {"thread": ("threading", "_thread"), "builtins": ("builtins",)}


@dataclass
class Facts:
    """One run's events, parsed once (:func:`patchaudit.model.events.parse`), and indexed."""

    events: list[Event]
    app_roots: tuple[Path, ...]
    cwd: Path
    imports: dict[str, ImportEvent] = field(default_factory=dict)  # module -> first import
    patches: list[PatchEvent] = field(default_factory=list)
    by_kind: dict[str, list[Event]] = field(default_factory=dict)

    @classmethod
    def from_events(
        cls, events: Iterable[Mapping[str, Any]], app_roots: Iterable[Path], cwd: Path
    ) -> Facts:
        parsed = [parse(event) for event in events]
        facts = cls(parsed, tuple(Path(os.path.realpath(r)) for r in app_roots), cwd)
        for event in parsed:
            facts.by_kind.setdefault(event.kind, []).append(event)
            if isinstance(event, ImportEvent):
                facts.imports.setdefault(event.module or "", event)
            elif isinstance(event, PatchEvent):
                facts.patches.append(event)
        return facts

    def all(self, kind: str) -> list[Event]:
        return self.by_kind.get(kind, [])

    def first(self, kind: str) -> Event | None:
        found = self.by_kind.get(kind)
        return found[0] if found else None

    # -- patching -----------------------------------------------------------------------------
    @property
    def first_patch(self) -> PatchEvent | None:
        return self.patches[0] if self.patches else None

    def patch_location(self) -> str:
        patch = self.first_patch
        if patch is None:
            return "nowhere"
        return f"{self.display(patch.file)}:{patch.raw.get('line')}"

    def loaded_before_patch(self) -> list[str]:
        """Modules whose first import happened before the first patch call, in import order."""
        return [m for m, e in self.imports.items() if e.phase == "pre-patch"]

    # -- import chains ------------------------------------------------------------------------
    def chain(self, module: str) -> list[str]:
        """``[target, ..., module]``: who imported whom, following first-import importers."""
        steps = [module]
        seen = {module}
        current = self.imports.get(module)
        while current is not None:
            importer = current.importer
            if not importer or importer in seen or importer == TARGET_IMPORTER:
                break
            steps.append(importer)
            seen.add(importer)
            current = self.imports.get(importer)
        steps.reverse()
        return steps

    def shortest_chain(self, module: str) -> list[str]:
        """Shortest importer path from the target to ``module`` over all recorded edges."""
        parents: dict[str, str] = {}
        edges: dict[str, list[str]] = {}
        for name, event in self.imports.items():
            edges.setdefault(event.importer or "", []).append(name)
        queue = deque([TARGET_IMPORTER])
        while queue:
            node = queue.popleft()
            for child in edges.get(node, ()):
                if child not in parents and child != TARGET_IMPORTER:
                    parents[child] = node
                    queue.append(child)
        if module not in parents:
            return self.chain(module)
        path = [module]
        while parents.get(path[-1], TARGET_IMPORTER) != TARGET_IMPORTER:
            path.append(parents[path[-1]])
        return list(reversed(path))

    # -- source locations ---------------------------------------------------------------------
    def module_file(self, module: str) -> str | None:
        event = self.imports.get(module)
        return event.file if event else None

    @staticmethod
    def is_installed_file(path: str | None) -> bool:
        """A file of an installed distribution (site-packages): a launcher's or a library's."""
        if not path or path.startswith("<"):
            return False
        parts = Path(os.path.realpath(path)).parts
        return "site-packages" in parts or "dist-packages" in parts

    def is_app_file(self, path: str | None) -> bool:
        if not path or path.startswith("<"):
            return False
        if self.is_installed_file(path):
            return False
        real = Path(os.path.realpath(path))
        if not real.is_file():  # Cython's `src/gevent/....pxd` frames name no file here
            return False
        return any(real == root or root in real.parents for root in self.app_roots)

    def app_frame(self, stack: Any) -> Mapping[str, Any] | None:
        """The innermost frame of the application's own code in ``stack`` (innermost last)."""
        for frame in reversed(stack or []):
            if isinstance(frame, Mapping) and self.is_app_file(frame.get("file")):
                return frame
        return None

    def at(self, frame: Mapping[str, Any]) -> str:
        """``path:line`` of a frame, as findings show it."""
        return f"{self.display(frame.get('file'))}:{frame.get('line') or 1}"

    def display(self, path: str | None) -> str:
        """A path relative to the working directory (what findings show)."""
        if not path:
            return "<unknown>"
        if path.startswith("<"):
            return path
        try:
            return Path(os.path.realpath(path)).relative_to(os.path.realpath(self.cwd)).as_posix()
        except ValueError:
            return path

    def where(
        self,
        event: Event | Mapping[str, Any] | None,
        *,
        file: str = "file",
        line: str = "line",
        default: str | None = None,
    ) -> tuple[str, int]:
        """Where an event (or a frame) happened: its file as findings show it, and its line
        (1 when unknown). ``default`` names the place of an event that has no file."""
        raw = event.raw if isinstance(event, Event) else event or {}
        path = raw.get(file)
        shown = self.display(path) if path or default is None else default
        return shown, int(raw.get(line) or 1)

    def patch_place(self, default: str | None = None) -> tuple[str, int]:
        """Where the first patch call ran: the place of findings about the patch as a whole."""
        if self.first_patch is None and default is not None:
            return default, 1
        return self.where(self.first_patch)

    def target_place(self) -> tuple[str, int]:
        """The target's file, line 1: the place of findings that have no better one."""
        target = self.first("target")
        return self.display(target.file if target else None), 1

    def app_import_site(
        self, chain: list[str], *, outermost: bool, recorded_first: bool = False
    ) -> tuple[str, int] | None:
        """The application line on ``chain`` (``[target, ..., module]``) that imported the next
        module: the outermost such line (what ran before the patch, where the static MPA101 is
        reported) or the innermost (the direct import of a library, where MPA70x is), so a
        runtime finding lands on its static twin. ``recorded_first`` takes the line the recorder
        saw executing before reading the source (cheaper on big test modules)."""
        found = None
        for importer, imported in pairwise(chain):
            path = self.module_file(importer)
            if not self.is_app_file(path):
                continue
            line = None
            if recorded_first:
                event = self.imports.get(imported)
                line = event.line if event is not None and event.importer == importer else None
            line = line or self.import_site(importer, imported)
            if line:
                found = (self.display(path), int(line))
                if outermost:
                    break
        return found

    def import_line(self, importer_file: str | None, module: str) -> int | None:
        """The line in ``importer_file`` that imports ``module`` (or its package)."""
        if not importer_file:
            return None
        for line, imported, names in _imports_in(importer_file):
            candidates = {imported, *(f"{imported}.{n}" for n in names)}
            for candidate in candidates:
                # `import a.b` runs `a` too; `from a import b` may import the submodule a.b
                if candidate == module or candidate.startswith(module + "."):
                    return line
                if module.startswith(candidate + "."):
                    return line
        return None

    def import_site(self, importer: str, imported: str) -> int | None:
        """The line of ``importer`` that caused ``imported`` to load: the import statement when
        the source has one, else the line the probe saw executing (C extensions import too)."""
        line = self.import_line(self.module_file(importer), imported)
        if line is not None:
            return line
        event = self.imports.get(imported)
        if event and event.importer == importer and event.line:
            return event.line
        return None

    def binding_line(
        self, path: str | None, name: str, holder_class: str | None = None
    ) -> int | None:
        """The line of ``path`` that binds ``name`` (import, assignment, def or class)."""
        if not path:
            return None
        return _bindings(path).get((holder_class, name))


@cache
def _parse(path: str) -> ast.Module | None:
    try:
        with open(path, "rb") as handle:
            return ast.parse(handle.read(), filename=path)
    except (OSError, SyntaxError, ValueError, RecursionError):
        return None


@cache
def _imports_in(path: str) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    tree = _parse(path)
    if tree is None:
        return ()
    package = _package_of(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base, tuple(a.name for a in node.names)))
    return tuple(sorted(found))


def _package_of(path: str) -> str:
    """Dotted package of a file, climbing folders that have ``__init__.py``."""
    folder = Path(path).parent
    parts: list[str] = []
    while (folder / "__init__.py").exists():
        parts.append(folder.name)
        folder = folder.parent
    return ".".join(reversed(parts))


@cache
def _bindings(path: str) -> dict[tuple[str | None, str], int]:
    tree = _parse(path)
    found: dict[tuple[str | None, str], int] = {}
    if tree is None:
        return found

    def record(owner: str | None, body: list[ast.stmt]) -> None:
        for node in body:
            names: list[str] = []
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [(a.asname or a.name).split(".")[0] for a in node.names]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            for name in names:
                found.setdefault((owner, name), node.lineno)
            if isinstance(node, ast.ClassDef) and owner is None:
                record(node.name, node.body)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                record(
                    owner,
                    [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])],
                )

    record(None, tree.body)
    return found


@dataclass
class RuntimeContext:
    """Everything a runtime rule may look at."""

    facts: Facts
    baseline: Facts | None  # the same target imported patch-first: the noise floor
    patched_modules: frozenset[str]  # what the app's gevent patches (from its interpreter)
    startup_modules: frozenset[str]  # what that interpreter loads before any code runs
    mode: str
    max_blocking: float
    concurrency: int

    def baseline_stale(self) -> set[tuple[str, str, str]]:
        if self.baseline is None:
            return set()
        return {e.identity for e in self.baseline.all("stale") if isinstance(e, StaleEvent)}

    def real_stale(self) -> list[StaleEvent]:
        """Stale references minus the noise floor (those a patch-first run has too)."""
        noise = self.baseline_stale()
        events = [
            e
            for e in self.facts.all("stale")
            if isinstance(e, StaleEvent) and e.identity not in noise
        ]
        if self.baseline is None:  # without a baseline, only the application's own holders are sure
            events = [e for e in events if self.facts.is_app_file(e.holder_file)]
        return events

    @classmethod
    def observe(
        cls,
        events: list[dict[str, Any]],
        *,
        app_roots: Iterable[Path],
        cwd: Path,
        mode: str,
        max_blocking: float,
        concurrency: int,
        baseline_events: list[dict[str, Any]]
        | Callable[[Facts], list[dict[str, Any]]]
        | None = None,
        patched_modules: frozenset[str] | None = None,
        startup_modules: Iterable[str] | Callable[[Facts], Iterable[str]] = (),
    ) -> RuntimeContext:
        """The context of one recorded run: the one constructor every consumer uses.

        ``baseline_events`` is the noise floor: a patch-first run of the same target (one that
        did not finish is dropped), or a callable that picks it from the facts.
        ``patched_modules`` defaults to what the run's own patch calls replaced
        (:func:`replaced_modules`). ``startup_modules`` is what the interpreter had loaded
        before the app ran: what the run recorded (the probe's ``start`` event), else this; a
        callable derives them from the facts instead (the pytest plugin).
        """
        roots = list(app_roots)
        facts = Facts.from_events(events, roots, cwd)
        baseline = None
        if callable(baseline_events):
            baseline_events = baseline_events(facts)
        if baseline_events is not None:
            baseline = Facts.from_events(baseline_events, roots, cwd)
            if baseline.first("done") is None:
                baseline = None
        if callable(startup_modules):
            recorded = startup_modules(facts)
        else:
            recorded = (facts.first("start") or {}).get("startup_modules") or startup_modules
        return cls(
            facts=facts,
            baseline=baseline,
            patched_modules=replaced_modules(facts) if patched_modules is None else patched_modules,
            startup_modules=frozenset(recorded),
            mode=mode,
            max_blocking=max_blocking,
            concurrency=concurrency,
        )


def replaced_modules(facts: Facts) -> frozenset[str]:
    """Modules the run's patch calls replaced something in (gevent's ``saved``, eventlet's
    patched groups): what was patched, read from the run rather than from gevent's lists."""
    names: set[str] = set()
    for event in facts.all("settings"):
        if isinstance(event, SettingsEvent):
            names.update((event.saved or {}).keys())
    for patch in facts.patches:
        if patch.framework != "eventlet":
            continue
        for group in patch.already_patched or {}:
            names.update(_EVENTLET_GROUPS.get(group, (group,)))
    return frozenset(names)
