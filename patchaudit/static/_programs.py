"""Programs: what actually starts code in the tree, and what each one runs under.

A repository holds several programs (a web app, a worker, scripts, a test suite). A program is
an entry module plus everything it pulls in through project imports. Entries come from what
really launches code, strongest first:

* ``[tool.patchaudit] entry-points``;
* launchers declared outside Python (:mod:`._launchers`): packaging scripts, gunicorn, celery,
  uWSGI, locust and ``python -m gevent.monkey`` command lines and config files;
* scripts (an ``if __name__ == "__main__":`` block, a ``#!`` line, or a file no import can name);
* locustfiles by content (locust's CLI has patched before it imports them), modules that patch
  at import time and that no project module imports, and the pytest suite (conftests and test
  modules form one program, started by pytest).

Questions such as "does this code run under gevent?" are asked of the programs a file is part
of, so an eventlet script in ``tools/`` does not make the gevent web app "mix both frameworks".
Code that no program reaches (a library's modules, plugins loaded by name) is judged by what it
imports itself, as a library written for that framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache

from ..model.known import known_patch_points
from ..model.machinery import is_machinery
from ..model.source import ImportRecord, PatchPoint, is_entry_point, is_test_path, module_key
from ._launchers import Launcher
from ._summary import FileSummary

FRAMEWORKS = ("gevent", "eventlet")

# How a program starts (`check --show-programs` shows it).
CONFIGURED = "entry-points"
SCRIPT = "script"
LOCUST = "locust"
PATCHING = "patching-module"
GUNICORN_CONFIG = "gunicorn-config"
PYTEST = "pytest"
LIBRARY = "library"  # not a program: code reached from no entry, judged on its own imports


@dataclass
class Program:
    root: str  # module key of the entry module (for the pytest suite, its first conftest)
    kind: str  # a launcher kind (console-script, gunicorn, ...) or one of the constants above
    launcher: str  # one line: how it is started
    members: list[FileSummary] = field(default_factory=list)
    frameworks: frozenset[str] = frozenset()  # what it runs under
    used: frozenset[str] = frozenset()  # imported or patched by its own code
    patched_by: str | None = None  # the framework its launcher patches with before the root runs
    as_main: bool = False  # the root runs as `__main__`: no import lock, its main block runs
    function: str | None = None  # called after the root is imported (console scripts)
    preload: bool | None = False  # gunicorn --preload: the master imports the app unpatched
    source: str | None = None  # where the launcher is declared ("Procfile:1")
    preload_at: str | None = None  # where gunicorn's preload_app is set, when it is
    roots: tuple[str, ...] = ()  # the pytest suite: every conftest and test module
    worker_framework: str | None = None  # a gunicorn config: what its workers patch with
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

    @property
    def is_library(self) -> bool:
        return self.kind == LIBRARY

    @property
    def entry(self) -> str:
        """The entry module's path (for the pytest suite, its first conftest or test)."""
        return next((m.relpath for m in self.members if _key(m) == self.root), self.root)

    def to_json(self) -> dict[str, object]:
        return {
            "entry": self.entry,
            "kind": self.kind,
            "launcher": self.launcher,
            "declared_at": self.source,
            "frameworks": sorted(self.frameworks),
            "patched_by_launcher": self.patched_by,
            "modules": len(self.members),
        }


def _key(summary: FileSummary) -> str:
    return module_key(summary.module, summary.relpath)


def frameworks_used(summaries: Iterable[FileSummary]) -> frozenset[str]:
    """gevent/eventlet imported or patched by any of ``summaries``."""
    used: set[str] = set()
    for summary in summaries:
        used |= _file_frameworks(summary)
    return frozenset(used)


def _file_frameworks(
    summary: FileSummary, *, at_import: bool = False, as_main: bool = False
) -> frozenset[str]:
    """gevent/eventlet the file imports or patches; ``at_import``: only what runs when it is
    imported (or, ``as_main``, run as a script)."""
    # Asked once per program a file belongs to, so thousands of times in a large tree: kept on
    # the summary itself (outside its fields, so neither the cache nor equality sees it).
    memo = summary.__dict__.setdefault("_frameworks", {})
    found = memo.get((at_import, as_main))
    if found is None:
        found = memo[at_import, as_main] = _frameworks_of(summary, at_import, as_main)
    return found


def _frameworks_of(summary: FileSummary, at_import: bool, as_main: bool) -> frozenset[str]:
    if at_import:
        contexts: tuple[str, ...] = ("module", "main") if as_main else ("module",)
    else:
        contexts = ("module", "main", "function")
    used = {p.framework for p in summary.patch_points if p.context in contexts}
    imports = [r for r in summary.imports if r.context in contexts]
    used.update(r.module.split(".")[0] for r in imports)
    patchers = _patcher_frameworks()  # `import locust` patches with gevent
    used.update(patchers[r.module] for r in imports if r.module in patchers)
    return frozenset(used & set(FRAMEWORKS))


@cache
def _patcher_frameworks() -> dict[str, str]:
    return {module: point.framework for module, point in known_patch_points().items()}


def import_edges(modules: dict[str, FileSummary]) -> dict[str, set[str]]:
    """Module key -> the project modules its imports (any context) execute."""
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
    return edges


def build_programs(
    modules: dict[str, FileSummary],
    launchers: list[Launcher],
    entry_points: tuple[str, ...],
    by_path: dict[str, str],
    packages: frozenset[str] = frozenset(),
) -> list[Program]:
    """The programs of the tree, then one library pseudo-program per unreached root.

    ``by_path`` maps a root-relative path to the module key of that file, for launchers that
    name a file (``locust -f tests/load.py``); ``packages`` names every regular package (a
    folder with ``__init__.py``), parsed or not.
    """
    edges = import_edges(modules)
    imported = set().union(*edges.values()) if edges else set()
    programs: list[Program] = []
    claimed: set[str] = set()

    def add(root: str, kind: str, launcher: str, **extra: object) -> Program:
        program = Program(root, kind, launcher, **extra)  # type: ignore[arg-type]
        _fill(program, modules, edges)
        programs.append(program)
        claimed.add(root)
        return program

    for key, summary in sorted(modules.items()):
        if entry_points and is_entry_point(summary.module, summary.relpath, entry_points):
            add(key, CONFIGURED, "[tool.patchaudit] entry-points", as_main=True)
    for launcher in launchers:
        config = by_path.get(launcher.source.rpartition(":")[0])
        if launcher.kind == "gunicorn" and config is not None and config not in claimed:
            # The config runs in gunicorn's master, which never patches; a gevent worker forks
            # from it and patches after, so what the config imported ran before that patch.
            add(
                config,
                GUNICORN_CONFIG,
                f"gunicorn -c {modules[config].relpath}",
                worker_framework=launcher.framework,
                source=launcher.source,
            )
        key = _launched_module(launcher, modules, by_path)
        if key is not None and not is_machinery(key) and modules[key].relpath != "setup.py":
            add(
                key,
                launcher.kind,
                launcher.command,
                patched_by=launcher.framework,
                function=launcher.function,
                preload=launcher.preload,
                source=launcher.source,
                preload_at=launcher.preload_at,
                as_main=launcher.kind == "python" and launcher.module is None,
            )
    tests = sorted(k for k, s in modules.items() if is_test_summary(s))
    for key, summary in sorted(modules.items()):
        if key in claimed or key in tests or is_machinery(summary.module):
            continue
        if key in imported:
            continue
        if summary.runs_as_script or summary.module is None:
            add(key, SCRIPT, f"python {summary.relpath}", as_main=True)
        elif _imports_locust(summary):
            add(key, LOCUST, f"locust -f {summary.relpath}", patched_by="gevent")
        elif _in_plain_folder(summary, packages):
            add(key, SCRIPT, f"python {summary.relpath}", as_main=True)
        elif any(p.context == "module" for p in summary.patch_points):
            add(key, PATCHING, f"imported by a server or runner (patches at {summary.relpath})")
    if tests:
        conftests = sorted(tests, key=lambda k: (modules[k].relpath.count("/"), k))
        conftests = [k for k in conftests if modules[k].relpath.endswith("conftest.py")]
        root = conftests[0] if conftests else tests[0]
        # `python -m gevent.monkey --module pytest` (in a Makefile, tox.ini...) patches first
        early = next((x for x in launchers if x.framework and x.module == "pytest"), None)
        program = Program(
            root,
            PYTEST,
            early.command if early else "pytest",
            roots=tuple(conftests + tests),
            patched_by=early.framework if early else None,
            source=early.source if early else None,
        )
        _fill(program, modules, edges)
        programs.append(program)
    reached = {m.relpath for p in programs for m in p.members}
    # then roots no entry reaches, then what only import cycles reach
    for key in sorted(modules, key=lambda k: (k in imported, k)):
        if modules[key].relpath not in reached:
            library = Program(key, LIBRARY, "imported by applications (no launcher in the tree)")
            _fill(library, modules, edges)
            programs.append(library)
            reached.update(m.relpath for m in library.members)
    return programs


def library_view(key: str, modules: dict[str, FileSummary], edges: dict[str, set[str]]) -> Program:
    """A file of a shipped package that none of the package's own programs reach, seen as a
    library: it runs under what it and its imports use."""
    program = Program(key, LIBRARY, "imported by applications (no launcher in the tree)")
    _fill(program, modules, edges)
    return program


def is_test_summary(summary: FileSummary) -> bool:
    """Test code pytest collects (a test file written as a script is a script)."""
    name = summary.module.replace(".", "/") + ".py" if summary.module else summary.relpath
    return is_test_path(name) and not summary.runs_as_script


def _in_plain_folder(summary: FileSummary, packages: frozenset[str]) -> bool:
    """A module in a folder that is not a package (`examples/`, `scripts/`, `benchmarks/`):
    written to be run as `python examples/x.py`."""
    if summary.module is None or summary.is_package:
        return False
    package = summary.module.rpartition(".")[0]
    folder = summary.relpath.rpartition("/")[0]
    return package not in packages and folder.rpartition("/")[2] not in ("", "src")


def _imports_locust(summary: FileSummary) -> bool:
    return any(
        r.context == "module" and r.module.split(".")[0] == "locust" for r in summary.imports
    )


def _launched_module(
    launcher: Launcher, modules: dict[str, FileSummary], by_path: dict[str, str]
) -> str | None:
    if launcher.path is not None:
        return by_path.get(launcher.path)
    if launcher.module is None:
        return None
    # `gunicorn chat:app` in examples/chat/Procfile imports from that folder (its cwd) first
    folder = launcher.source.rpartition(":")[0].rpartition("/")[0]
    base = f"{folder}/" if folder else ""
    stem = launcher.module.replace(".", "/")
    found = by_path.get(f"{base}{stem}.py") or by_path.get(f"{base}{stem}/__init__.py")
    return found or (launcher.module if launcher.module in modules else None)


def _fill(program: Program, modules: dict[str, FileSummary], edges: dict[str, set[str]]) -> None:
    closure: set[str] = set()
    for root in program.roots or (program.root,):
        closure |= _closure(root, edges)
    program.members = [modules[k] for k in sorted(closure)]
    used = frameworks_used(program.members)
    program.used = used
    if program.is_library:
        # A library written for gevent runs under gevent: one that imports it when its modules
        # load (perhaps in a branch), not one with a lazy import in a function it may not call.
        program.frameworks = frozenset().union(
            *(_file_frameworks(s, at_import=True) for s in program.members)
        )
        return
    # A program runs under a framework its launcher patches with, that its own code patches
    # with, or that its entry module itself imports (a gevent script spawning greenlets).
    runs = {f for f in (program.patched_by, program.worker_framework) if f}
    starts = set(program.roots or (program.root,))
    runs.update(
        p.framework
        for s in program.members
        for p in s.patch_points
        if _runs_at_start(s, p, _key(s) in starts, program.function)
    )
    # ... and what the entry imports when it starts (not in a function it may never call)
    if not program.roots:  # a test suite runs on gevent only when something in it patches
        runs |= _file_frameworks(modules[program.root], at_import=True, as_main=program.as_main)
    program.frameworks = frozenset(runs)


def _runs_at_start(
    summary: FileSummary, point: PatchPoint, is_root: bool, then_call: str | None
) -> bool:
    """A patch call the program's start runs (perhaps in one branch): at module level, in the
    entry's main block, or in a function called there. A patch helper that some other function
    may call later (`def _patch_gevent(): ...`) does not make the program a gevent one."""
    if point.context == "module" or (point.context == "main" and is_root):
        return True
    if point.context != "function" or point.enclosing is None:
        return False
    called = summary.module_calls.get(point.enclosing)
    if called is not None and (called[1] == "module" or is_root):
        return True
    return is_root and point.enclosing == then_call


def _closure(root: str, edges: dict[str, set[str]]) -> set[str]:
    seen = {root}
    todo = [root]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
