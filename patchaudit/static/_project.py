"""The project model: modules, the import graph, and what executes before each patch point.

The programs of the tree (``_programs``) and their import replays (``_replay``, the "pre-patch"
sets) come together here in :class:`Project`, which the project rules query.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from ..model.known import known_importers
from ..model.machinery import is_machinery
from ..model.source import MAIN, MODULE, PatchPoint
from ..model.source import module_key as source_key
from ._modules import PROJECT, ModuleIndex, ModuleNode
from ._programs import (
    PATCHING,
    PYTEST,
    Program,
    import_edges,
    is_test_summary,
    library_view,
)
from ._replay import Simulation, loaded_by
from ._sorters import ImportSorters
from ._summary import FileSummary

if TYPE_CHECKING:
    from .._config import Config
    from .._gevent_patches import PatchLists


@dataclass
class Project:
    config: Config
    patch_lists: PatchLists
    summaries: dict[str, FileSummary]  # by relpath
    index: ModuleIndex
    modules: dict[str, FileSummary] = field(default_factory=dict)  # by module key
    global_frameworks: frozenset[str] = frozenset()  # `framework = "gevent"`: every file
    declared_frameworks: frozenset[str] = frozenset()  # run-time dependencies of the project
    mentions_eventlet: bool = False  # the word appears in code or requirements (see MPA403)
    programs: list[Program] = field(default_factory=list)
    simulations: list[Simulation] = field(default_factory=list)
    root_prefix: str = ""  # the project root as seen from cwd ("" when they are the same)
    distributed: frozenset[str] = frozenset()  # top-level modules the packaging metadata ships
    import_sorters: ImportSorters = field(default_factory=ImportSorters)  # at the root
    master_hooks: dict[str, frozenset[str]] = field(default_factory=dict)  # config relpath
    _loaded: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _views: dict[str, Program] = field(default_factory=dict, repr=False)
    launcher_loads: dict[str, frozenset[str]] = field(default_factory=dict)  # pytest -> modules
    # relpath -> {(line, code)} of the noqa comments that silenced a finding (for MPA002)
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
        """The programs ``summary`` runs in; for code no entry reaches, the library
        pseudo-programs that contain it (files that failed to parse run in none)."""
        found = self._programs_of.get(summary.relpath, [])
        if _top(summary.module) in self.distributed:
            # The package the project ships is judged by the programs it starts itself (its
            # console scripts, launchers), not by examples or tests that import a constant of it.
            found = [p for p in found if p.is_library or _top(p.root) in self.distributed]
        real = [p for p in found if not p.is_library]
        if real or found:
            return real or found
        if summary.parse_error is not None or summary.too_large is not None:
            return []
        return [self._library_view(module_key(summary))]

    def _library_view(self, key: str) -> Program:
        if key not in self._views:
            self._views[key] = library_view(key, self.modules, self._edges)
        return self._views[key]

    @cached_property
    def _edges(self) -> dict[str, set[str]]:
        return import_edges(self.modules)

    def is_framework_code(self, summary: FileSummary) -> bool:
        """gevent's or eventlet's own package (checking the framework's repository): the
        machinery programs are audited against, with tests that patch and block on purpose."""
        return is_machinery(summary.module)

    @cached_property
    def _main_only(self) -> set[str]:
        imported = set().union(*self._edges.values()) if self.modules else set()
        roots = {p.root for p in self.programs if p.as_main}
        others = {p.root for p in self.programs if not p.as_main and p.kind != PYTEST}
        return {k for k in roots if k not in imported and k not in others}

    @cached_property
    def _start_up(self) -> set[str]:
        keys = {p.root for p in self.programs if not p.is_library and p.kind != PYTEST}
        for sim in self.simulations:
            keys.update(sim.executed)
        return keys

    def starts_program(self, summary: FileSummary) -> bool:
        """Whether the file is a program's entry module or runs in its start-up before the
        patch (where a patch helper is the program's own choice, not a library's design)."""
        return module_key(summary) in self._start_up

    def starts_own_program(self, summary: FileSummary) -> bool:
        """Whether the file is the entry module of a program, rather than a module the project
        ships for applications to import (a distributed module that patches is the latter)."""
        key = module_key(summary)
        for program in self.programs:
            if program.root != key or program.is_library:
                continue
            # `import fastreq` runs it: the distribution's own import name patches on import.
            # A submodule (`myapp.wsgi`) that patches is more likely a server's entry point.
            return not (program.kind == PATCHING and summary.module in self.distributed)
        return False

    def is_build_script(self, summary: FileSummary) -> bool:
        """The project's own setup.py: packaging, run by pip or setuptools at build time."""
        return self.shown_path("setup.py") == summary.relpath

    def in_master_hook(self, summary: FileSummary, line: int) -> bool:
        """Whether ``line`` is in a gunicorn config hook that only the master runs (`on_starting`,
        `when_ready`): the master never patches, whatever the workers run under."""
        hooks = self.master_hooks.get(summary.relpath, ())
        return any(
            first <= line <= last
            for name, (first, last) in summary.function_lines.items()
            if name in hooks
        )

    def is_test_code(self, summary: FileSummary) -> bool:
        return is_test_summary(summary)

    def runs_only_as_main(self, summary: FileSummary) -> bool:
        """Whether the file is only ever run as `__main__` (a script nothing imports): its
        module level then runs without the import lock."""
        return module_key(summary) in self._main_only

    def uses(self, framework: str, summary: FileSummary) -> bool:
        """Whether the code in ``summary`` runs in a program that uses ``framework``."""
        if framework in self.global_frameworks:
            return True
        return any(framework in self.frameworks_of(p) for p in self.programs_of(summary))

    def frameworks_of(self, program: Program) -> frozenset[str]:
        """What ``program`` runs under; code no launched program reaches also runs under what
        the project declares as a run-time dependency."""
        if program.is_library:
            return program.frameworks | self.declared_frameworks | self.global_frameworks
        return program.frameworks | self.global_frameworks

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
                if name not in self.modules or not self._judged_by(name, sim):
                    continue
                previous = limits.get(name)
                if previous is None or _wider(entry.limit, previous[0]):
                    limits[name] = (entry.limit, sim)
        return limits

    def _judged_by(self, key: str, sim: Simulation) -> bool:
        """A module of the package the project ships runs before a patch only in the programs
        the package starts itself: an example that imports it before patching is the example's
        mistake (MPA101/MPA102 report it there), not the library's."""
        if _top(self.modules[key].module) not in self.distributed:
            return True
        return _top(sim.root) in self.distributed

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

    def option_dict(self, summary: FileSummary, name: str) -> tuple[dict[str, bool], str] | None:
        """The literal dict that `patch_all(**name)` in ``summary`` spreads, and where it is:
        a name of that file, an attribute of a project module, or, for Django's lazy
        `django.conf.settings.X`, the project's settings modules."""
        module, _, attr = name.rpartition(".")
        if not module:
            found = summary.option_dicts.get(name)
            return (found, f"{summary.relpath}:{name}") if found is not None else None
        target = self.modules.get(module)
        if target is not None:
            candidates = [target]
        elif module == "django.conf.settings":
            candidates = [
                s for k, s in sorted(self.modules.items()) if "settings" in k.rpartition(".")[2]
            ]
        else:
            candidates = []
        for candidate in candidates:
            found = candidate.option_dicts.get(attr)
            if found is not None:
                return found, f"{candidate.relpath}:{attr}"
        return None

    def shown_path(self, root_relative: str) -> str:
        """A path relative to the project root as reports show paths (relative to cwd)."""
        return posixpath.normpath(posixpath.join(self.root_prefix, root_relative))

    def loaded_at_import(self, relpath: str) -> frozenset[str]:
        """Every module that importing the file executes, up to its first patch call."""
        if relpath not in self._loaded:
            key = module_key(self.summaries[relpath])
            loaded = loaded_by(key, self.index, known_importers(), without_packages=True)
            self._loaded[relpath] = loaded
        return self._loaded[relpath]

    def patch_location(self, sim: Simulation) -> str:
        """Where the patch of ``sim`` runs: ``path:line``, or the launcher that patches."""
        if sim.patch.line == 0:  # a launcher, or a package that patches, known from the table
            return sim.patch_module
        summary = self.modules.get(sim.patch_module)
        return f"{summary.relpath if summary else sim.patch_module}:{sim.patch.line}"

    def exists(self, module: str) -> bool:
        return self.index.exists(module)


def _top(module: str | None) -> str:
    return (module or "").split(".")[0]


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
