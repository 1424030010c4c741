"""Resolve module names to source files and summarize what importing them executes.

Project modules come from the project's own summaries. Standard-library and installed third-party
modules are found on the interpreter's ``sys.path`` without importing them (importing would run
their code), and their module-level imports and patch calls are read from their source. Those
summaries are cached by path and stat fields. A file found under a project root but not among
the project's files (excluded, or a symlink discovery did not follow) is read only if it really
lies inside that root; nothing but regular files is ever opened.
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import _safeio
from ..model.source import MAIN, MODULE, FileContext, ImportRecord, PatchPoint
from ._cache import StatKey, same_stat, stat_key
from ._context import build_context, deep_call, deep_recursion

PROJECT = "project"
STDLIB = "stdlib"
THIRD_PARTY = "third-party"
BUILTIN = "builtin"
EXTENSION = "extension"


@dataclass
class ModuleNode:
    """What executing one module at import time does, as far as patching is concerned."""

    name: str
    kind: str
    path: str | None
    is_package: bool
    imports: list[ImportRecord] = field(default_factory=list)
    patch_points: list[PatchPoint] = field(default_factory=list)
    stale_bindings: list[tuple[int, str, str]] = field(default_factory=list)  # (line, name, target)


@dataclass(frozen=True)
class _Located:
    path: str | None
    kind: str
    is_package: bool
    search_path: tuple[str, ...]  # where submodules of a package live


class ModuleIndex:
    """Finds modules by name: project files first, then the interpreter's search path."""

    def __init__(
        self,
        project: dict[str, ModuleNode],
        project_roots: Iterable[Path],
        cache: dict[str, tuple[StatKey, ModuleNode]] | None = None,
        search_path: Iterable[str] | None = None,
    ) -> None:
        self.project = project
        self.cache = cache if cache is not None else {}
        self.cache_written: set[str] = set()  # paths summarized anew: what to store
        self._started_ns = time.time_ns()
        roots = [str(p) for p in project_roots]
        # (as spelled, real path): the checked tree, where links out are not followed
        self._trees = tuple((r.rstrip(os.sep) + os.sep, os.path.realpath(r)) for r in roots)
        entries = list(search_path) if search_path is not None else default_search_path()
        self._roots = tuple(dict.fromkeys(roots + entries))
        # where installed modules are found, the project's roots left out (see _cache)
        self.search_path = tuple(e for e in dict.fromkeys(entries) if e not in roots)
        self._listing: dict[str, frozenset[str]] = {}
        self._located: dict[str, _Located | None] = {}
        self._nodes: dict[str, ModuleNode | None] = {}
        # memos of the import replay (see _replay.simulate): per module, what importing it runs;
        # per import statement, the modules it executes
        self.replay_events: dict[str, list[tuple[int, int, object]]] = {}
        # by id(): hashing the frozen record field by field was a fifth of a large replay; every
        # record is held by a node of this index for as long as the index lives
        self.replay_targets: dict[int, list[str]] = {}
        self.replay_reach: object = None  # which modules can reach a patch call (_replay._Reach)
        self.files_read: set[str] = set()  # installed files summarized (see _stage)
        stdlib = sysconfig.get_paths()
        self._stdlib_dirs = tuple(
            os.path.realpath(stdlib[k]) + os.sep for k in ("stdlib", "platstdlib") if k in stdlib
        )

    def get(self, name: str) -> ModuleNode | None:
        """The node for ``name``, or None when it cannot be found (not installed)."""
        if name in self.project:
            return self.project[name]
        if name in self._nodes:
            return self._nodes[name]
        located = self._locate(name)
        node = None if located is None else self._summarize(name, located)
        self._nodes[name] = node
        return node

    def exists(self, name: str) -> bool:
        return name in self.project or self._locate(name) is not None

    # -- locating -----------------------------------------------------------------------------
    def _locate(self, name: str) -> _Located | None:
        if name in self._located:
            return self._located[name]
        result: _Located | None
        parent, _, leaf = name.rpartition(".")
        if not parent:
            if name in sys.builtin_module_names:
                result = _Located(None, BUILTIN, False, ())
            else:
                result = self._find_in(name, self._roots)
        else:
            parent_loc = self._locate(parent) if parent not in self.project else None
            if parent in self.project:
                node = self.project[parent]
                dirs = (os.path.dirname(node.path),) if node.path and node.is_package else ()
                result = self._find_in(leaf, dirs)
            elif parent_loc is not None and parent_loc.search_path:
                result = self._find_in(leaf, parent_loc.search_path)
            else:
                result = None
        self._located[name] = result
        return result

    def _find_in(self, leaf: str, dirs: Iterable[str]) -> _Located | None:
        namespace: list[str] = []
        for directory in dirs:
            names = self._list(directory)
            if leaf in names:
                package_dir = os.path.join(directory, leaf)
                init = os.path.join(package_dir, "__init__.py")
                if "__init__.py" in self._list(package_dir):
                    return _Located(init, self._kind(init), True, (package_dir,))
                namespace.append(package_dir)
                continue
            if leaf + ".py" in names:
                path = os.path.join(directory, leaf + ".py")
                return _Located(path, self._kind(path), False, ())
            if any(n.startswith(leaf + ".") and n.endswith((".so", ".pyd")) for n in names):
                return _Located(None, EXTENSION, False, ())
        if namespace:
            return _Located(None, THIRD_PARTY, True, tuple(namespace))
        return None

    @property
    def folders_listed(self) -> list[str]:
        return list(self._listing)

    def _list(self, directory: str) -> frozenset[str]:
        listing = self._listing.get(directory)
        if listing is None:
            try:
                listing = frozenset(os.listdir(directory))
            except OSError:
                listing = frozenset()
            self._listing[directory] = listing
        return listing

    def _kind(self, path: str) -> str:
        real = os.path.realpath(path)
        if "site-packages" not in real and real.startswith(self._stdlib_dirs):
            return STDLIB
        return THIRD_PARTY

    # -- summarizing --------------------------------------------------------------------------
    def _summarize(self, name: str, located: _Located) -> ModuleNode:
        if located.path is None:
            return ModuleNode(name, located.kind, None, located.is_package)
        path = self._readable(located.path)
        if path is None:  # a link out of the checked tree: not followed
            return ModuleNode(name, located.kind, located.path, located.is_package)
        try:
            stat = os.stat(path)
        except OSError:
            return ModuleNode(name, located.kind, located.path, located.is_package)
        self.files_read.add(path)
        cached = self.cache.get(located.path)
        if cached is not None and same_stat(stat, cached[0]):
            node = cached[1]
            if node.name == name:
                return node
        node = summarize_external(name, located.kind, path, located.is_package)
        node.path = located.path
        key = stat_key(stat, self._started_ns)
        if key is not None:
            self.cache[located.path] = (key, node)
            self.cache_written.add(located.path)
        return node

    def _readable(self, path: str) -> str | None:
        """The path to read: as found, or for a file in the checked tree its real path, None
        when that leaves the tree (installed packages may be symlinked anywhere)."""
        for spelled, real_root in self._trees:
            if path.startswith(spelled):
                return _safeio.resolve_within(path, real_root)
        return os.path.realpath(path) if os.path.islink(path) else path


def summarize_external(name: str, kind: str, path: str, is_package: bool) -> ModuleNode:
    """Read an installed module's source: its import-time imports, patch calls, stale bindings."""
    node = ModuleNode(name, kind, path, is_package)
    try:
        data = _safeio.read_regular(path)  # never a FIFO or device named like a module
        tree = ast.parse(data, filename=path)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return node
    if b"patch_all" in data or b"monkey_patch" in data or b"patch_socket" in data:
        try:
            ctx = build_context(path, name, is_package, "", tree)
        except RecursionError:
            try:
                ctx = deep_call(_build_deep, path, name, is_package, tree)
            except RecursionError:
                return node
        node.imports = [r for r in ctx.imports if r.context == MODULE]
        node.patch_points = [p for p in ctx.patch_points if p.context == MODULE]
    else:
        node.imports = list(_module_level_imports(tree, name, is_package))
    node.stale_bindings = [
        (r.line, n, f"{r.module}.{n}") for r in node.imports for n in r.names if n != "*"
    ]
    return node


def _build_deep(path: str, name: str, is_package: bool, tree: ast.Module) -> FileContext:
    with deep_recursion():
        return build_context(path, name, is_package, "", tree)


def _module_level_imports(tree: ast.Module, module: str, is_package: bool):
    """Imports that run at import time, found by visiting statements only (fast)."""
    from ._context import _is_main_guard, _is_type_checking, _resolve_relative

    stack: list[ast.AST] = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _record(node, alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, is_package, node.module, node.level)
            if base is not None:
                yield _record(node, base, tuple(a.name for a in node.names))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If) and (
            _is_main_guard(node.test) or _is_type_checking(node.test)
        ):
            stack.extend(reversed(node.orelse))
        else:
            for attr in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, attr, None)
                if children:
                    stack.extend(reversed(children))


def _record(node: ast.stmt, module: str, names: tuple[str, ...]) -> ImportRecord:
    return ImportRecord(
        line=node.lineno,
        column=node.col_offset + 1,
        module=module,
        names=names,
        context=MODULE,
        end_line=node.end_lineno or node.lineno,
        end_column=(node.end_col_offset or 0) + 1,
    )


def default_search_path() -> list[str]:
    """The interpreter's own path minus the current directory: project files come from the
    project roots, and '' would make the cwd shadow installed packages."""
    return [p for p in sys.path if p and os.path.isdir(p) and not p.endswith(".zip")]


def executed_imports(node: ModuleNode, as_main: bool) -> list[ImportRecord]:
    """Imports that run when the module is imported (or run as a script when ``as_main``)."""
    contexts = (MODULE, MAIN) if as_main else (MODULE,)
    return [r for r in node.imports if r.context in contexts]
