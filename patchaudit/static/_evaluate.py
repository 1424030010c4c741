"""Turn summaries into findings: build the project, simulate imports, apply rules and noqa."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .._config import Config
from .._findings import Report
from .._gevent_patches import PatchListError, load_patch_lists
from ..judge import UNUSED_NOQA, Judge, project_noqa
from ..model.known import known_importers
from ..model.source import is_entry_point as matches_entry_point
from ..rules._model import REGISTRY, Hit, Rule, Runner, Scope
from . import _cache
from ._discover import SourceFile
from ._modules import ModuleIndex
from ._programs import build_programs
from ._project import Project, module_key, project_nodes, simulate
from ._summary import FileSummary

INTERNAL_ERROR_PREFIX = "internal error"


def evaluate(
    files: list[tuple[SourceFile, FileSummary | None]],
    config: Config,
    global_frameworks: frozenset[str],
    mentions: frozenset[str],
    report: Report,
    *,
    cwd: Path,
    cache: _cache.Folder | None,
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

    module_cache = _cache.load_modules(cache) if cache is not None else {}
    parsed = [s for s in summaries.values() if s.parse_error is None]
    _unname_duplicates(parsed, report)
    unparsed = [
        FileSummary(source.relpath, source.module, source.is_package)
        for source, summary in files
        if summary is None and source.module is not None
    ]
    nodes = project_nodes(unparsed + parsed, str(cwd))
    roots = [config.root, config.root / "src"]
    index = ModuleIndex(nodes, [r for r in roots if r.is_dir()], cache=module_cache)
    project = Project(
        config=config,
        patch_lists=patch_lists,
        summaries=summaries,
        index=index,
        modules={module_key(s): s for s in parsed},
        global_frameworks=global_frameworks,
        mentions_eventlet="eventlet" in mentions | global_frameworks,
    )
    project.programs = build_programs(project.modules, global_frameworks)
    _run_simulations(project, parsed)
    _apply_rules(project, report, cwd)
    if cache is not None and index.cache_dirty:
        _cache.store_modules(cache, index.cache)
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


def _run_simulations(project: Project, parsed: list[FileSummary]) -> None:
    importers = known_importers()
    call_lines = {module_key(s): s.module_calls for s in parsed}
    for root in _roots(project, parsed):
        sim = simulate(root, project.index, call_lines, importers)
        if sim is not None:
            project.simulations.append(sim)


def _roots(project: Project, parsed: list[FileSummary]) -> list[str]:
    """Entry modules to replay: configured entry points, else modules nothing else imports."""
    keys = {module_key(s): s for s in parsed}
    if project.config.entry_points:
        return [k for k, s in keys.items() if is_entry_point(s, project.config.entry_points)]
    imported: set[str] = set()
    for summary in parsed:
        for record in summary.imports:
            imported.add(record.module)
            imported.update(f"{record.module}.{n}" for n in record.names)
    patching = {k for k, s in keys.items() if s.patch_points}
    if not patching:
        return []
    reach = _reaches_patch(keys, patching)
    return sorted(k for k in keys if k in reach and k not in imported)


def _reaches_patch(keys: dict[str, FileSummary], patching: set[str]) -> set[str]:
    """Project modules from which some module with a patch call is reachable by imports."""
    importers: dict[str, set[str]] = {}
    for key, summary in keys.items():
        for record in summary.imports:
            targets = [record.module, *(f"{record.module}.{n}" for n in record.names)]
            parts = record.module.split(".")
            targets += [".".join(parts[:i]) for i in range(1, len(parts))]
            for target in targets:
                importers.setdefault(target, set()).add(key)
        parent = key.rpartition(".")[0]
        if parent and not key.startswith("__main__:"):
            importers.setdefault(parent, set()).add(key)  # importing a submodule runs its package
    reach = set(patching)
    todo = list(patching)
    while todo:
        for importer in importers.get(todo.pop(), ()):
            if importer not in reach:
                reach.add(importer)
                todo.append(importer)
    return reach


def is_entry_point(summary: FileSummary, entry_points: tuple[str, ...]) -> bool:
    return matches_entry_point(summary.module, summary.relpath, entry_points)


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
    for rule, hit, relpath in candidates:
        found = judge.admit(rule, hit, relpath)
        if found is not None:
            report.findings.append(found)
    # MPA002 runs last: it reports the noqa entries that silenced nothing above.
    project.suppressions_used = {path: set(used) for path, used in judge.used.items()}
    unused_rule = REGISTRY[UNUSED_NOQA]
    report.findings.extend(judge.judge(unused_rule, unused_rule.check(project)))


def _in_scope(project: Project, rule: Rule, summary: FileSummary, hit: Hit) -> bool:
    if rule.scope is Scope.GEVENT_PROGRAM and not project.uses("gevent", summary):
        return False
    if rule.scope is Scope.PRE_PATCH:
        sim = project.runs_before_patch(summary, hit.line, hit.context)
        if sim is None:
            return False
        hit.evidence.setdefault("patch_point", _patch_location(project, sim))
        chain = _chain_text(project, sim, module_key(summary))
        if len(chain) > 1:
            hit.evidence.setdefault("import_chain", chain)
    return rule.applies is None or rule.applies(project, hit)


def _patch_location(project: Project, sim) -> str:
    summary = project.modules.get(sim.patch_module)
    where = summary.relpath if summary else sim.patch_module
    return f"{where}:{sim.patch.line}"


def _chain_text(project: Project, sim, module: str) -> list[str]:
    steps = []
    for name, via in sim.chain(module):
        summary = project.modules.get(name)
        label = summary.relpath if summary else name
        steps.append(f"{label}:{via.line}" if via is not None else label)  # line of the import
    return steps
