"""The project model: modules, the import graph, and what executes before each patch point.

The core is :func:`simulate`, which replays Python's import-time execution from an entry module:
package ``__init__`` modules first, then each import in source order, depth first, following
project, standard-library and installed third-party modules, until the first patch call runs.
Everything that ran before that call, and how far each half-run module got, is the "pre-patch"
set the ordering and stale-reference rules work from.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from ..model.machinery import is_machinery
from ..model.source import FUNCTION, MAIN, MODULE, ImportRecord, PatchPoint
from ..model.source import module_key as source_key
from ._modules import PROJECT, ModuleIndex, ModuleNode
from ._programs import Program
from ._summary import FileSummary

if TYPE_CHECKING:
    from .._config import Config
    from .._gevent_patches import PatchLists


@dataclass
class Executed:
    """One module that started executing before the patch point."""

    module: str
    parent: str | None  # the module whose execution imported this one
    via: ImportRecord | None  # the import statement in ``parent``; None for a parent package
    limit: int | None = None  # executed only up to this line when the patch ran; None: all of it


@dataclass
class Simulation:
    root: str
    patch_module: str
    patch: PatchPoint
    executed: dict[str, Executed]
    missing: dict[str, Executed]  # imports that could not be resolved (not installed)

    def chain(self, module: str) -> list[tuple[str, ImportRecord | None]]:
        """``[(module, import in it that leads on), ..., (target, None)]`` from the root."""
        steps: list[tuple[str, ImportRecord | None]] = [(module, None)]
        seen = {module}
        entry = self.executed.get(module) or self.missing.get(module)
        while entry is not None and entry.parent is not None and entry.parent not in seen:
            steps.append((entry.parent, entry.via))
            seen.add(entry.parent)
            entry = self.executed.get(entry.parent) or self.missing.get(entry.parent)
        steps.reverse()
        return steps


class _PatchReached(Exception):
    def __init__(self, module: str, point: PatchPoint) -> None:
        self.module = module
        self.point = point


@dataclass
class Project:
    config: Config
    patch_lists: PatchLists
    summaries: dict[str, FileSummary]  # by relpath
    index: ModuleIndex
    modules: dict[str, FileSummary] = field(default_factory=dict)  # by module key
    # frameworks that apply to every file: configured, declared as dependencies, gunicorn workers
    global_frameworks: frozenset[str] = frozenset()
    mentions_eventlet: bool = False  # the word appears in code or requirements (see MPA403)
    programs: list[Program] = field(default_factory=list)
    simulations: list[Simulation] = field(default_factory=list)
    # relpath -> {(line, code)} of `# noqa` entries that silenced a finding (for MPA002)
    suppressions_used: dict[str, set[tuple[int, str]]] = field(default_factory=dict)

    # -- queries the rules use ----------------------------------------------------------------
    @cached_property
    def _programs_of(self) -> dict[str, list[Program]]:
        by_path: dict[str, list[Program]] = {}
        for program in self.programs:
            for member in program.members:
                by_path.setdefault(member.relpath, []).append(program)
        return by_path

    def programs_of(self, summary: FileSummary) -> list[Program]:
        """The programs ``summary`` runs in (files that failed to parse run in none)."""
        return self._programs_of.get(summary.relpath, [])

    def uses(self, framework: str, summary: FileSummary) -> bool:
        """Whether the code in ``summary`` runs in a program that uses ``framework``."""
        if framework in self.global_frameworks:
            return True
        return any(framework in p.frameworks for p in self.programs_of(summary))

    def summary_of(self, module: str) -> FileSummary | None:
        return self.modules.get(module)

    def all_patch_points(self) -> Iterator[tuple[FileSummary, PatchPoint]]:
        for summary in self.summaries.values():
            for point in summary.patch_points:
                yield summary, point

    @cached_property
    def pre_patch_limits(self) -> dict[str, tuple[int | None, Simulation]]:
        """Project module key -> (line limit or None, the simulation that showed it)."""
        limits: dict[str, tuple[int | None, Simulation]] = {}
        for sim in self.simulations:
            for name, entry in sim.executed.items():
                if name not in self.modules:
                    continue
                previous = limits.get(name)
                if previous is None or _wider(entry.limit, previous[0]):
                    limits[name] = (entry.limit, sim)
        return limits

    def runs_before_patch(self, summary: FileSummary, line: int, context: str) -> Simulation | None:
        """The simulation in which ``line`` of ``summary`` executes before a patch call, if any."""
        key = module_key(summary)
        found = self.pre_patch_limits.get(key)
        if found is None:
            return None
        limit, sim = found
        if context == MAIN and sim.root != key:
            return None
        if context not in (MODULE, MAIN):
            return None
        return sim if limit is None or line < limit else None

    def exists(self, module: str) -> bool:
        return self.index.exists(module)


def _wider(new: int | None, old: int | None) -> bool:
    if old is None:
        return False
    return new is None or new > old


def module_key(summary: FileSummary) -> str:
    """Scripts that are not importable still take part, under a key no import can produce."""
    return source_key(summary.module, summary.relpath)


def project_nodes(summaries: Iterable[FileSummary], root: str) -> dict[str, ModuleNode]:
    nodes = {}
    for summary in summaries:
        key = module_key(summary)
        path = f"{root}/{summary.relpath}"
        nodes[key] = ModuleNode(
            key, PROJECT, path, summary.is_package, summary.imports, summary.patch_points
        )
    return nodes


def import_targets(record: ImportRecord, index: ModuleIndex) -> list[str]:
    """Modules an import statement executes: the module, then submodules named by ``from``."""
    targets = [record.module]
    for name in record.names:
        if name != "*" and index.exists(f"{record.module}.{name}"):
            targets.append(f"{record.module}.{name}")
    return targets


def simulate(
    root: str,
    index: ModuleIndex,
    call_lines: dict[str, dict[str, tuple[int, str]]],
    known_importers: dict[str, list[str]],
    *,
    as_main: bool = True,
) -> Simulation | None:
    """Replay import-time execution from ``root`` until the first patch call; None if none runs.

    ``call_lines`` maps module key -> {function name: (line, context)} for functions called at
    module level, so a patch call inside ``def main()`` runs where ``main()`` is called.
    """
    executed: dict[str, Executed] = {}
    missing: dict[str, Executed] = {}

    def events(name: str, node: ModuleNode) -> list[tuple[int, int, object]]:
        contexts = (MODULE, MAIN) if name == root and as_main else (MODULE,)
        found: list[tuple[int, int, object]] = []
        for record in node.imports:
            if record.context in contexts:
                found.append((record.line, record.column, record))
        calls = call_lines.get(name, {})
        for point in node.patch_points:
            if point.context in contexts:
                found.append((point.line, point.column, point))
            elif point.context == FUNCTION and point.enclosing in calls:
                line, context = calls[point.enclosing]
                if context in contexts:
                    found.append((line, 0, point))
        found.sort(key=lambda item: (item[0], item[1]))
        return found

    def run(name: str, parent: str | None, via: ImportRecord | None) -> None:
        if name in executed or name in missing:
            return
        package = name.rpartition(".")[0]
        if package and not name.startswith("__main__:"):
            run(package, parent, via)
            if package in missing:
                return
        node = index.get(name)
        if node is None:
            missing[name] = Executed(name, parent, via)
            top = name.split(".")[0]
            for reached in known_importers.get(name, known_importers.get(top, [])):
                if name == top:
                    run(reached, name, None)
            return
        entry = executed[name] = Executed(name, parent, via)
        if is_machinery(name):
            return  # the frameworks' own imports are what does the patching, not a problem
        for line, _column, event in events(name, node):
            entry.limit = line
            if isinstance(event, PatchPoint):
                raise _PatchReached(name, event)
            for target in import_targets(event, index):  # type: ignore[arg-type]
                run(target, name, event)  # type: ignore[arg-type]
        entry.limit = None

    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 10_000))
    try:
        run(root, None, None)
    except _PatchReached as reached:
        return Simulation(root, reached.module, reached.point, executed, missing)
    except RecursionError:
        return None
    finally:
        sys.setrecursionlimit(old_limit)
    return None
