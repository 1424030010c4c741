"""Programs: the groups of project modules that run together in one process.

A repository often holds several programs (a web app, a worker, scripts, tests). A program is
everything a root module (one that no other project module imports) pulls in through project
imports. Questions such as "does this code run under gevent?" or "does the program install the
psycopg2 wait callback anywhere?" are asked per program, so an eventlet script in ``tools/``
does not make the gevent web app "mix both frameworks".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..model.source import ImportRecord, PatchPoint
from ._summary import FileSummary

FRAMEWORKS = ("gevent", "eventlet")


@dataclass
class Program:
    root: str
    members: list[FileSummary] = field(default_factory=list)
    frameworks: frozenset[str] = frozenset()  # used by its code, or declared for the project
    used: frozenset[str] = frozenset()  # imported or patched by its own code
    _names: set[str] | None = field(default=None, repr=False)  # every dotted prefix named

    def imports(self, prefix: str) -> Iterator[tuple[FileSummary, ImportRecord]]:
        for summary in self.members:
            for record in summary.imports:
                if record.module == prefix or record.module.startswith(prefix + "."):
                    yield summary, record

    def references(self, prefix: str) -> bool:
        """Whether any member names ``prefix`` (an import, attribute or call), or below it."""
        if self._names is None:
            self._names = set()
            for summary in self.members:
                for name in (*summary.references, *(r.module for r in summary.imports)):
                    parts = name.split(".")
                    self._names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return prefix in self._names

    def patch_points(self, framework: str | None = None) -> list[tuple[FileSummary, PatchPoint]]:
        return [
            (s, p)
            for s in self.members
            for p in s.patch_points
            if framework is None or p.framework == framework
        ]


def frameworks_used(summaries: Iterable[FileSummary]) -> frozenset[str]:
    """gevent/eventlet imported or patched by any of ``summaries``."""
    used: set[str] = set()
    for summary in summaries:
        used |= _file_frameworks(summary)
    return frozenset(used)


def _file_frameworks(summary: FileSummary) -> frozenset[str]:
    used = {point.framework for point in summary.patch_points}
    used.update(r.module.split(".")[0] for r in summary.imports)
    return frozenset(used & set(FRAMEWORKS))


def build_programs(
    modules: dict[str, FileSummary], global_frameworks: frozenset[str]
) -> list[Program]:
    """One program per root module; modules reachable from no root (import cycles) get their own."""
    edges: dict[str, set[str]] = {}
    for key, summary in modules.items():
        targets: set[str] = set()
        for record in summary.imports:
            parts = record.module.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            targets.update(f"{record.module}.{n}" for n in record.names)
        parent = key.rpartition(".")[0]
        if parent and not key.startswith("__main__:"):
            targets.add(parent)  # importing a submodule runs its package first
        edges[key] = {t for t in targets if t in modules and t != key}
    imported = set().union(*edges.values()) if edges else set()
    roots = sorted(k for k in modules if k not in imported)
    per_file = {key: _file_frameworks(summary) for key, summary in modules.items()}
    covered: set[str] = set()
    programs = []
    for root in roots + sorted(modules):
        if root in covered and root not in roots:
            continue
        closure = _closure(root, edges)
        covered |= closure
        used = frozenset().union(*(per_file[k] for k in closure))
        members = [modules[k] for k in sorted(closure)]
        programs.append(Program(root, members, used | global_frameworks, used))
    return programs


def _closure(root: str, edges: dict[str, set[str]]) -> set[str]:
    seen = {root}
    todo = [root]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
