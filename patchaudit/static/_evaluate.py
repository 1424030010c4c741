"""Turn summaries into findings: build the project, simulate imports, apply rules and noqa."""

from __future__ import annotations

import fnmatch
from collections import Counter
from pathlib import Path

from .._config import Config
from .._findings import Finding, Report
from .._gevent_patches import PatchListError, load_patch_lists
from ..rules._model import REGISTRY, Hit, Rule, Scope
from . import _cache
from ._discover import SourceFile
from ._known import known_importers
from ._modules import ModuleIndex
from ._programs import build_programs
from ._project import Project, module_key, project_nodes, simulate
from ._summary import FileSummary

UNUSED_NOQA = "MPA002"
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
    for pattern in entry_points:
        if summary.module is not None and fnmatch.fnmatchcase(summary.module, pattern):
            return True
        if fnmatch.fnmatchcase(summary.relpath, pattern):
            return True
    return False


def _apply_rules(project: Project, report: Report, cwd: Path) -> None:
    config = project.config
    used: dict[str, set[tuple[int, str]]] = {}  # relpath -> {(line, code)} noqa entries that fired
    candidates: list[tuple[Rule, Hit, FileSummary | None]] = []
    for summary in project.summaries.values():
        for code, hits in summary.hits.items():
            rule = REGISTRY[code]
            for hit in hits:
                if _in_scope(project, rule, summary, hit):
                    candidates.append((rule, hit, summary))
    for rule in REGISTRY.values():
        if rule.kind == "project" and rule.code != UNUSED_NOQA:
            for hit in rule.check(project):
                candidates.append((rule, hit, _summary_for(project, hit.path)))

    seen: set[tuple[str, str, int, int]] = set()
    for rule, hit, summary in candidates:
        relpath = hit.path or (summary.relpath if summary else "")
        if rule.code not in config.codes_for(_relative_to_root(relpath, config, cwd)):
            continue
        key = (rule.code, relpath, hit.line, hit.column)
        if key in seen:
            continue
        seen.add(key)
        if summary is not None and summary.suppressions.suppresses(rule.code, hit.line):
            used.setdefault(relpath, set()).add((hit.line, rule.code))
            continue
        report.findings.append(_finding(rule, hit, relpath))
    project.suppressions_used = used
    unused_rule = REGISTRY[UNUSED_NOQA]
    for hit in unused_rule.check(project):
        summary = project.summaries[hit.path]
        enabled = UNUSED_NOQA in config.codes_for(_relative_to_root(hit.path, config, cwd))
        if enabled and not summary.suppressions.suppresses(UNUSED_NOQA, hit.line):
            report.findings.append(_finding(unused_rule, hit, hit.path))


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


def _summary_for(project: Project, relpath: str | None) -> FileSummary | None:
    return project.summaries.get(relpath) if relpath else None


def _relative_to_root(relpath: str, config: Config, cwd: Path) -> str:
    try:
        return (cwd / relpath).resolve().relative_to(config.root.resolve()).as_posix()
    except ValueError:
        return relpath


def _finding(rule: Rule, hit: Hit, relpath: str) -> Finding:
    return rule.finding(hit, relpath)
