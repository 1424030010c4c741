"""The import replay: what executes, in order, when a program starts, up to its first patch call.

:func:`simulate` replays Python's import-time execution from an entry module: package
``__init__`` modules first, then each import in source order, depth first, following project,
standard-library and installed third-party modules, until the first patch call runs. Everything
that ran before that call, and how far each half-run module got, is the "pre-patch" set the
ordering and stale-reference rules work from.

Most programs of a large tree never reach a patch call (a library's modules, the standard
library checked with ``framework = "gevent"``), and replaying each of them walks its whole
import closure only to find nothing. Whether any patch call is reachable from a module at all
is a property of the import graph, computed once per graph (:class:`_Reach`); a program none of
whose imports can reach one is not replayed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..model.machinery import is_machinery
from ..model.source import FUNCTION, MAIN, MODULE, ImportRecord, PatchPoint
from ._modules import ModuleIndex, ModuleNode

__all__ = ["Executed", "Replay", "Simulation", "import_targets", "loaded_by", "simulate"]

Events = list[tuple[int, int, object]]  # (line, column, ImportRecord | PatchPoint), in order
Calls = dict[str, dict[str, tuple[int, str]]]  # module -> {function: (call line, context)}


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


def import_targets(record: ImportRecord, index: ModuleIndex) -> list[str]:
    """Modules an import statement executes: the module, then submodules named by ``from``."""
    targets = [record.module]
    for name in record.names:
        if name != "*" and index.exists(f"{record.module}.{name}"):
            targets.append(f"{record.module}.{name}")
    return targets


@dataclass(frozen=True)
class Replay:
    """How one program starts, for :func:`simulate`."""

    root: str
    as_main: bool = True  # the root runs as `__main__` (its main block runs)
    then_call: str | None = None  # a function of the root called once it is imported
    preloaded: frozenset[str] = frozenset()  # modules the launcher imported before the root
    patched_after: str | None = None  # the launcher patches once the root is imported (label)
    without_packages: bool = False  # the root's own imports only, not its packages' __init__


def simulate(
    replay: Replay,
    index: ModuleIndex,
    call_lines: Calls,
    known_importers: dict[str, list[str]],
    known_patches: dict[str, PatchPoint] | None = None,
) -> Simulation | None:
    """Replay import-time execution of a program until the first patch call; None if none runs.

    ``call_lines`` maps module key -> {function name: (line, context)} for functions called at
    module level, so a patch call inside ``def main()`` runs where ``main()`` is called.
    Packages that patch when imported are patch points: installed ones by their own source,
    others by ``known_patches`` (the data table).
    """
    root = replay.root
    executed: dict[str, Executed] = {}
    missing: dict[str, Executed] = {}
    patches = known_patches or {}
    calls_of = dict(call_lines)
    if replay.then_call:
        calls_of[root] = {**call_lines.get(root, {}), replay.then_call: (10**9, MODULE)}
    contexts = (MODULE, MAIN) if replay.as_main else (MODULE,)

    def events(name: str, node: ModuleNode) -> Events:
        if name == root:
            return _events(node, contexts, calls_of.get(name, {}))
        return module_events(name, node, index, call_lines)

    if replay.patched_after is None:
        reach = _Reach.of(index, call_lines, known_importers, patches)
        node = index.get(root)
        if node is not None and not reach.from_events(root, events(root, node)):
            return None  # nothing it imports can patch: a replay would end with None

    def run(name: str, parent: str | None, via: ImportRecord | None) -> None:
        if name in executed or name in missing or name in replay.preloaded:
            return
        package = name.rpartition(".")[0]
        own = replay.without_packages and name == root
        if package and not name.startswith("__main__:") and not own:
            run(package, parent, via)
            # The root's own folder may not exist yet (a new buffer checked from stdin): it
            # still runs, as if in a namespace package. Any other module of a missing package
            # cannot be imported.
            if package in missing and name != root:
                return
        node = index.get(name)
        if node is None:
            missing[name] = Executed(name, parent, via)
            if name in patches:
                raise _PatchReached(name, patches[name])
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
            for target in targets_of(event, index):  # type: ignore[arg-type]
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
    if replay.patched_after is not None:  # gunicorn --preload: the worker patches after this
        point = PatchPoint(0, 0, "gevent", "gevent.monkey.patch_all", 0, (), MODULE, None)
        return Simulation(root, replay.patched_after, point, executed, missing)
    return None


def module_events(name: str, node: ModuleNode, index: ModuleIndex, call_lines: Calls) -> Events:
    """What importing ``name`` (not as the program's root) runs, in order. The same in every
    replay: kept on the index (a monorepo replays the same stdlib graph a thousand times), but
    for modules with module-level calls, whose call lines are the caller's."""
    shared = index.replay_events
    if name in shared and name not in call_lines:
        return shared[name]
    found = _events(node, (MODULE,), call_lines.get(name, {}))
    if name not in call_lines:
        shared[name] = found
    return found


def _events(
    node: ModuleNode, contexts: tuple[str, ...], calls: dict[str, tuple[int, str]]
) -> Events:
    found: Events = []
    for record in node.imports:
        if record.context in contexts:
            found.append((record.line, record.column, record))
    for point in node.patch_points:
        if point.context in contexts:
            found.append((point.line, point.column, point))
        elif point.context == FUNCTION and point.enclosing in calls:
            line, context = calls[point.enclosing]
            if context in contexts:
                found.append((line, 0, point))
    found.sort(key=lambda item: (item[0], item[1]))
    return found


def targets_of(record: ImportRecord, index: ModuleIndex) -> list[str]:
    """:func:`import_targets`, once per import statement and index."""
    targets = index.replay_targets.get(id(record))
    if targets is None:
        targets = index.replay_targets[id(record)] = import_targets(record, index)
    return targets


class _Reach:
    """Which modules can reach a patch call when imported, in any order and any branch: the
    import graph's strongly connected components (Tarjan's algorithm, iteratively), each
    reaching one if any member calls one or imports a module that reaches one. Preloaded
    modules and the order of imports only ever stop a replay earlier, so a module this says
    cannot reach one never does in any replay."""

    def __init__(self, index: ModuleIndex, calls: Calls, importers: dict, patches: dict) -> None:
        self.index, self.calls, self.importers, self.patches = index, calls, importers, patches
        self.memo: dict[str, bool] = {}

    @classmethod
    def of(cls, index: ModuleIndex, calls: Calls, importers: dict, patches: dict) -> _Reach:
        """The index's graph, for these call lines and tables (kept while the same objects are
        passed: one evaluation passes the same ones to every replay)."""
        reach = index.replay_reach
        if not (
            isinstance(reach, _Reach)
            and reach.calls is calls
            and reach.importers is importers
            and reach.patches is patches
        ):
            reach = index.replay_reach = cls(index, calls, importers, patches)
        return reach

    def from_events(self, root: str, events: Events) -> bool:
        """Whether a root running ``events`` can reach a patch call."""
        if any(isinstance(event, PatchPoint) for _, _, event in events):
            return True
        package = root.rpartition(".")[0]
        starts = [package] if package and not root.startswith("__main__:") else []
        starts += [t for _, _, e in events for t in targets_of(e, self.index)]  # type: ignore[arg-type]
        return any(self.reaches(name) for name in starts)

    def _step(self, name: str) -> tuple[bool, list[str]]:
        """Whether ``name`` itself calls a patch, and the modules its import runs (as the
        replay's ``run`` has them: its package first)."""
        package = name.rpartition(".")[0]
        after = [package] if package and not name.startswith("__main__:") else []
        node = self.index.get(name)
        if node is None:
            if name in self.patches:
                return True, after
            top = name.split(".")[0]
            return False, after + (self.importers.get(name, []) if name == top else [])
        if is_machinery(name):
            return False, after
        for _line, _column, event in module_events(name, node, self.index, self.calls):
            if isinstance(event, PatchPoint):
                return True, after
            after += targets_of(event, self.index)  # type: ignore[arg-type]
        return False, after

    def reaches(self, start: str) -> bool:
        memo = self.memo
        if start in memo:
            return memo[start]
        order: dict[str, int] = {}
        low: dict[str, int] = {}
        own: dict[str, bool] = {}
        after: dict[str, list[str]] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        frames = [(start, 0)]
        while frames:
            name, i = frames.pop()
            if i == 0:
                order[name] = low[name] = len(order)
                stack.append(name)
                on_stack.add(name)
                own[name], after[name] = self._step(name)
            nexts = after[name]
            descended = False
            while i < len(nexts):
                target = nexts[i]
                i += 1
                if target in memo:
                    own[name] = own[name] or memo[target]
                elif target not in order:
                    frames += [(name, i), (target, 0)]
                    descended = True
                    break
                elif target in on_stack:
                    low[name] = min(low[name], order[target])
            if descended:
                continue
            if low[name] == order[name]:  # the root of a component: settle all its members
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == name:
                        break
                found = any(own[m] for m in members)
                for member in members:
                    memo[member] = found
            if frames:
                parent = frames[-1][0]
                low[parent] = min(low[parent], low[name])
                if memo.get(name):
                    own[parent] = True
        return memo[start]


def loaded_by(
    module: str,
    index: ModuleIndex,
    known_importers: dict[str, list[str]],
    *,
    without_packages: bool = False,
) -> frozenset[str]:
    """Every module that importing ``module`` executes (a launcher such as pytest)."""
    replay = Replay(module, False, patched_after=module, without_packages=without_packages)
    sim = simulate(replay, index, {}, known_importers)
    if sim is None:
        return frozenset()
    return (
        frozenset(sim.executed)
        | frozenset(sim.missing)
        | frozenset(known_importers.get(module, ()))
    )
