"""Turn summaries into findings: build the project, simulate imports, apply rules and noqa."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .._config import Config
from .._findings import Report
from .._gevent_patches import PatchListError, load_patch_lists
from ..judge import UNUSED_NOQA, Judge, project_noqa
from ..model.known import known_importers, known_patch_points
from ..rules._model import REGISTRY, Hit, Rule, Runner, Scope
from . import _cache
from ._discover import SourceFile
from ._launchers import Launcher
from ._modules import ModuleIndex, default_search_path
from ._programs import PYTEST, build_programs
from ._project import Project, module_key, project_nodes
from ._replay import Replay, loaded_by, simulate
from ._sorters import ImportSorters
from ._summary import FileSummary

INTERNAL_ERROR_PREFIX = "internal error"


def evaluate(
    files: list[tuple[SourceFile, FileSummary | None]],
    config: Config,
    launchers: list[Launcher],
    declared: frozenset[str],
    distributed: frozenset[str],
    mentions: frozenset[str],
    report: Report,
    *,
    cwd: Path,
    cache: _cache.Folder | None,
    sorters: ImportSorters | None = None,
) -> Project | None:
    try:
        patch_lists = load_patch_lists(cache_dir=cache.path if cache is not None else None)
    except PatchListError as exc:
        report.errors.append(str(exc))
        return None
    summaries = {source.relpath: summary for source, summary in files if summary is not None}
    for source, summary in files:
        if summary is not None and summary.internal_error:
            report.errors.append(
                f"{source.relpath}: {INTERNAL_ERROR_PREFIX}: {summary.internal_error}"
            )

    search_path = default_search_path()
    module_cache = _cache.load_modules(cache, search_path) if cache is not None else {}
    parsed = [s for s in summaries.values() if s.parse_error is None]
    _unname_duplicates(parsed, report)
    unparsed = [
        FileSummary(source.relpath, source.module, source.is_package)
        for source, summary in files
        if summary is None and source.module is not None
    ]
    nodes = project_nodes(unparsed + parsed, str(cwd))
    roots = [config.root, config.root / "src"]
    index = ModuleIndex(
        nodes, [r for r in roots if r.is_dir()], cache=module_cache, search_path=search_path
    )
    # `framework = "gevent"` applies to every file. A run-time dependency (``declared``) only
    # says the project uses it somewhere: it applies to code that no program the tree launches
    # reaches (an app started by a server configured elsewhere). A gunicorn config choosing a
    # gevent worker makes its own program a gevent one, not the tree.
    global_frameworks = frozenset({config.framework}) if config.framework != "auto" else frozenset()
    project = Project(
        config=config,
        patch_lists=patch_lists,
        summaries=summaries,
        index=index,
        modules={module_key(s): s for s in parsed},
        global_frameworks=global_frameworks,
        declared_frameworks=declared,
        mentions_eventlet="eventlet" in mentions | global_frameworks | declared,
    )
    by_path = {
        _root_relative(source.path, config.root): module_key(summary)
        for source, summary in files
        if summary is not None and summary.parse_error is None
    }
    _add_launched_files(project, files, launchers, by_path)
    packages = frozenset(s.module for s, _ in files if s.is_package and s.module)
    project.root_prefix = _root_relative(config.root, cwd) if config.root != cwd else ""
    project.distributed = distributed
    project.import_sorters = sorters or ImportSorters()
    project.programs = build_programs(
        project.modules, launchers, config.entry_points, by_path, packages
    )
    report.programs = [p.to_json() for p in project.programs if not p.is_library]
    for launcher in launchers:
        config_key = by_path.get(launcher.source.rpartition(":")[0])
        masters = frozenset(name for name, side in launcher.hooks if side == "master")
        if config_key is not None and masters:
            relpath = project.modules[config_key].relpath
            project.master_hooks[relpath] = project.master_hooks.get(relpath, masters) | masters
    _run_simulations(project)
    _apply_rules(project, report, cwd)
    if cache is not None and index.cache_written:
        _cache.store_modules(cache, index.cache, index.cache_written, index.search_path)
    return project


def _unname_duplicates(parsed: list[FileSummary], report: Report) -> None:
    """Files that map to the same module name (example folders each with an `app.py`) cannot
    all be that module in one program; each is treated as a separate script instead."""
    counts = Counter(s.module for s in parsed if s.module is not None)
    clashes = sorted(name for name, count in counts.items() if count > 1)
    for summary in parsed:
        if summary.module in clashes:
            summary.module = None
    if clashes:
        report.notes.append(
            f"{len(clashes)} module name(s) are defined by more than one file "
            f"({', '.join(clashes[:3])}{', ...' if len(clashes) > 3 else ''}); "
            "those files are analysed as separate scripts"
        )


def _add_launched_files(
    project: Project,
    files: list[tuple[SourceFile, FileSummary | None]],
    launchers: list[Launcher],
    by_path: dict[str, str],
) -> None:
    """A file a launcher starts is part of the model even when nothing in it needed parsing
    (an app module with no imports): the pre-scan skipped it, its program still exists."""
    named = {launcher.path for launcher in launchers if launcher.path}
    stems = {(launcher.module or "").replace(".", "/") for launcher in launchers}
    for source, summary in files:
        relative = _root_relative(source.path, project.config.root)
        if relative in by_path or (source.module is None and relative not in named):
            continue
        stem = relative.removesuffix("/__init__.py").removesuffix(".py")
        if relative in named or any(stem == s or stem.endswith("/" + s) for s in stems if s):
            empty = summary or FileSummary(source.relpath, source.module, source.is_package)
            if empty.parse_error is None:
                project.modules[module_key(empty)] = empty
                by_path[relative] = module_key(empty)


def _root_relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _run_simulations(project: Project) -> None:
    """Replay each program's start until its first patch call (the pre-patch sets)."""
    importers = known_importers()
    patches = known_patch_points()
    call_lines = {key: s.module_calls for key, s in project.modules.items()}
    for replay in _replays(project, importers):
        sim = simulate(replay, project.index, call_lines, importers, patches)
        if sim is not None:
            project.simulations.append(sim)


def _replays(project: Project, importers: dict[str, list[str]]) -> list[Replay]:
    """How each program starts, for the programs whose own code decides when patching runs."""
    replays = []

    def loads(launcher: str) -> frozenset[str]:
        """What the launcher itself imported before any of the program's code ran."""
        if launcher not in project.launcher_loads:
            project.launcher_loads[launcher] = loaded_by(launcher, project.index, importers)
        return project.launcher_loads[launcher]

    for program in project.programs:
        if program.is_library:
            continue
        if program.kind == PYTEST and program.patched_by is None:
            first = loads("pytest")
            replays.extend(Replay(root, as_main=False, preloaded=first) for root in program.roots)
        elif program.worker_framework is not None:
            label = f"{program.source} (gunicorn's {program.worker_framework} worker patches after)"
            first = loads("gunicorn.app.wsgiapp")
            replays.append(Replay(program.root, False, preloaded=first, patched_after=label))
        elif program.patched_by is None:
            replays.append(Replay(program.root, program.as_main, program.function))
        elif program.preload:
            label = f"{program.source or program.launcher} (the worker patches after --preload)"
            replays.append(Replay(program.root, False, program.function, patched_after=label))
    return replays


def _apply_rules(project: Project, report: Report, cwd: Path) -> None:
    judge = Judge(project.config, cwd, project_noqa(project), dedupe=True)
    candidates: list[tuple[Rule, Hit, str]] = []
    for summary in project.summaries.values():
        for code, hits in summary.hits.items():
            rule = REGISTRY[code]
            for hit in hits:
                if _in_scope(project, rule, summary, hit):
                    candidates.append((rule, hit, hit.path or summary.relpath))
    for rule in REGISTRY.values():
        if rule.runs_in(Runner.PROJECT) and rule.code != UNUSED_NOQA:
            candidates.extend((rule, hit, hit.path or "") for hit in rule.check(project))
    framework_code = {p for p, s in project.summaries.items() if project.is_framework_code(s)}
    if framework_code:
        report.notes.append(
            f"{len(framework_code)} file(s) of the framework's own package were not audited: "
            "they are the machinery programs are checked against"
        )
    # setup.py runs when the project is built or installed, never in the deployed process
    framework_code |= {p for p, s in project.summaries.items() if project.is_build_script(s)}
    for rule, hit, relpath in candidates:
        if relpath in framework_code:
            continue
        found = judge.admit(rule, hit, relpath)
        if found is not None:
            report.findings.append(found)
    # MPA002 runs last: it reports the noqa entries that silenced nothing above.
    project.suppressions_used = {path: set(used) for path, used in judge.used.items()}
    unused_rule = REGISTRY[UNUSED_NOQA]
    report.findings.extend(judge.judge(unused_rule, unused_rule.check(project)))


def _in_scope(project: Project, rule: Rule, summary: FileSummary, hit: Hit) -> bool:
    if rule.scope in (Scope.GEVENT_PROGRAM, Scope.GEVENT_IMPORTED):
        if not project.uses("gevent", summary):
            return False
        if rule.scope is Scope.GEVENT_IMPORTED and project.runs_only_as_main(summary):
            return False  # a script's module level runs without the import lock
        if project.in_master_hook(summary, hit.line):
            return False
    if rule.scope is Scope.ENTRY and not project.starts_program(summary):
        return False
    if rule.scope is Scope.PRE_PATCH:
        sim = project.runs_before_patch(summary, hit.line, hit.context)
        if sim is None:
            return False
        hit.evidence.setdefault("patch_point", project.patch_location(sim))
        chain = _chain_text(project, sim, module_key(summary))
        if len(chain) > 1:
            hit.evidence.setdefault("import_chain", chain)
    hit.path = hit.path or summary.relpath  # what `applies` asks about
    return rule.applies is None or rule.applies(project, hit)


def _chain_text(project: Project, sim, module: str) -> list[str]:
    steps = []
    for name, via in sim.chain(module):
        summary = project.modules.get(name)
        label = summary.relpath if summary else name
        steps.append(f"{label}:{via.line}" if via is not None else label)  # line of the import
    return steps
