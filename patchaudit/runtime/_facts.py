"""Structured facts from a probe run's event stream, with the questions the runtime rules ask.

The probe reports what happened (imports with their importers, patch calls, references still
held, hub blocks); this module answers "through which chain was X loaded", "which line bound
this name" and "is this frame the application's own code", which need the source on disk.
"""

from __future__ import annotations

import ast
import os
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

TARGET_IMPORTER = "<target>"


@dataclass
class Facts:
    events: list[dict[str, Any]]
    app_roots: tuple[Path, ...]
    cwd: Path
    imports: dict[str, dict[str, Any]] = field(default_factory=dict)  # module -> first import
    patches: list[dict[str, Any]] = field(default_factory=list)
    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_events(cls, events: list[dict[str, Any]], app_roots: list[Path], cwd: Path) -> Facts:
        facts = cls(events, tuple(Path(os.path.realpath(r)) for r in app_roots), cwd)
        for event in events:
            kind = event.get("event", "")
            facts.by_kind.setdefault(kind, []).append(event)
            if kind == "import":
                facts.imports.setdefault(event.get("module", ""), event)
            elif kind == "patch":
                facts.patches.append(event)
        return facts

    def all(self, kind: str) -> list[dict[str, Any]]:
        return self.by_kind.get(kind, [])

    def first(self, kind: str) -> dict[str, Any] | None:
        found = self.by_kind.get(kind)
        return found[0] if found else None

    # -- patching -----------------------------------------------------------------------------
    @property
    def first_patch(self) -> dict[str, Any] | None:
        return self.patches[0] if self.patches else None

    def patch_location(self) -> str:
        patch = self.first_patch
        if patch is None:
            return "nowhere"
        return f"{self.display(patch.get('file'))}:{patch.get('line')}"

    def loaded_before_patch(self) -> list[str]:
        """Modules whose first import happened before the first patch call, in import order."""
        return [m for m, e in self.imports.items() if e.get("phase") == "pre-patch"]

    # -- import chains ------------------------------------------------------------------------
    def chain(self, module: str) -> list[str]:
        """``[target, ..., module]``: who imported whom, following first-import importers."""
        steps = [module]
        seen = {module}
        current = self.imports.get(module)
        while current is not None:
            importer = current.get("importer")
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
            edges.setdefault(event.get("importer") or "", []).append(name)
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
        return event.get("file") if event else None

    def is_app_file(self, path: str | None) -> bool:
        if not path or path.startswith("<"):
            return False
        real = Path(os.path.realpath(path))
        if "site-packages" in real.parts or "dist-packages" in real.parts:
            return False
        return any(real == root or root in real.parents for root in self.app_roots)

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
        if event and event.get("importer") == importer and event.get("line"):
            return int(event["line"])
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
        return {
            (e.get("holder"), e.get("name"), e.get("original")) for e in self.baseline.all("stale")
        }
