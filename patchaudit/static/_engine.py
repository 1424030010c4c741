"""`patchaudit check`: discover files, pre-scan, parse in parallel with a cache, then evaluate.

Only files that can matter are parsed. A project that never mentions gevent or eventlet, nor
imports a package known to patch on import (grequests), and is not declared to run under one (see
``framework``) has nothing to audit, so the byte-level pre-scan is the whole run. In a gevent
program every file that imports something or contains a rule's trigger is parsed once, in worker
processes, and its summary cached by content hash.

The checked tree may be hostile: nothing in it is executed, imported or unpickled, files are read
through :mod:`patchaudit._safeio` (no final symlink followed, nothing but regular files opened),
files over ``max-file-size`` are not read, and a worker process that dies costs one file.

``check`` builds the model from the whole project root (``config.root``) whatever paths it is
given, and reports only what lands in them: pre-commit passes the staged files, and a mistake an
unchanged file causes in a staged one (importing it before the patch) is still found. The cache
keeps the unchanged files cheap: they are only stat'ed.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

from .. import rules as _rules  # noqa: F401  (registers every rule)
from .._config import Config
from .._findings import Report
from .._safeio import FileTooLargeError, read_regular
from ..model.known import known_patchers
from ..rules._model import REGISTRY
from . import _cache, _stage
from ._discover import SourceFile, discover
from ._launchers import Launcher, declared_frameworks, distributed_modules, find_launchers
from ._sorters import ImportSorters, import_sorters
from ._stdin import discover_stdin
from ._summary import FileSummary
from ._workers import WORKER_DIED, parse_all

if TYPE_CHECKING:
    from ._project import Project

FRAMEWORK_MENTION = re.compile(rb"\b(?:gevent|eventlet)\b")


@dataclass
class _FileState:
    source: SourceFile
    stat: _cache.StatKey | None = None  # what says "unchanged" next run (None: hash it again)
    digest: str | None = None
    mentions: frozenset[str] = frozenset()  # "gevent" / "eventlet" mentioned in the bytes
    relevant: bool = False  # imports something or contains a trigger: worth parsing
    summary: FileSummary | None = None  # None until parsed, or decoded from ``text``
    text: str = "null"  # the summary's stored form (see _cache.FileRow)
    summary_digest: str | None = None  # None: no summary
    too_large: int | None = None  # its size, when over max-file-size: never read
    failed: bool = False  # could not be read, or its worker died
    cached: _cache.FileRow | None = None  # the cache's row it was filled from, if any

    @property
    def has_summary(self) -> bool:
        return self.summary is not None or self.summary_digest is not None


def check(
    paths: list[Path],
    config: Config,
    *,
    cwd: Path,
    use_cache: bool = True,
    jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
    stdin: Path | None = None,
) -> Report:
    """Run the static analysis and report the findings in ``paths``.

    The model comes from the whole root (see :func:`analyze`'s ``model_from_root``), so a
    finding an unnamed file causes in a named one is reported; findings in files outside
    ``paths`` are not. With ``stdin`` (a file holding what was read from standard input), the
    one path is the name that source is checked under, in place of any file there.
    """
    return analyze(
        paths,
        config,
        cwd=cwd,
        use_cache=use_cache,
        jobs=jobs,
        model_from_root=True,
        progress=progress,
        reuse_stage=True,
        stdin=stdin,
    )[0]


def analyze(
    paths: list[Path],
    config: Config,
    *,
    cwd: Path,
    use_cache: bool = True,
    jobs: int | None = None,
    model_from_root: bool = False,
    progress: Callable[[str], None] | None = None,
    reuse_stage: bool = False,
    stdin: Path | None = None,
) -> tuple[Report, Project | None]:
    """Like :func:`check`, also returning the project model (the runtime audit reuses it).

    ``paths`` decide what is reported: the files named, whatever their extension and even if
    ``.gitignore`` excludes them, and the files found under the folders named (see
    :func:`discover`). With ``model_from_root`` the model (import graph, programs, what runs
    before each patch) is built from every file under ``config.root`` plus those, and findings,
    errors and counts are kept for the reported files only. Without it the model is the
    reported files alone: the runtime audit models the folder it runs the application from.
    With ``reuse_stage`` (and a cache) the project stage's output is reused when none of its
    inputs changed; the project returned is then None.
    """
    started_ns = time.time_ns()
    target = " ".join(str(p) for p in paths)
    report = Report(target=target)
    find = discover if stdin is None else partial(discover_stdin, holder=stdin)
    named, problems = find(
        paths if stdin is None else paths[0],
        exclude=config.exclude,
        root=config.root,
        cwd=cwd,
        respect_gitignore=config.respect_gitignore,
    )
    report.errors.extend(problems)
    files = _model_files(named, paths, config, cwd) if model_from_root else named
    report.source_files.update((f.relpath, str(f.target)) for f in files if f.target is not None)
    # Files of the model whose findings, errors and counts are not reported.
    hidden = frozenset(f.relpath for f in files) - {f.relpath for f in named}

    folder = _cache_folder(config, cwd, report) if use_cache else None
    files_name = _cache.files_name(config.fingerprint())
    cached = _cache.load_files(folder, files_name) if folder is not None else {}
    trigger_rx = _trigger_regex()
    states = [_FileState(f) for f in files]
    changed = False
    for state in states:
        entry = cached.get(state.source.relpath)
        changed |= _prescan(state, entry, trigger_rx, report, config.max_file_size, started_ns)

    launchers, problems = find_launchers(
        config.root,
        exclude=config.exclude,
        respect_gitignore=config.respect_gitignore,
        limit=config.max_file_size,
    )
    report.warnings.extend(problems)
    mentions = frozenset().union(*(s.mentions for s in states)) if states else frozenset()
    declared = declared_frameworks(config.root, config.max_file_size)
    frameworks = _frameworks_to_audit(config, launchers, declared) | mentions
    too_large = [s for s in states if s.too_large is not None]
    if frameworks:
        to_parse = [s for s in states if s.relevant and not s.has_summary and s.digest]
        _parse_all(to_parse, jobs, config.max_file_size, report, progress)
        changed |= bool(to_parse)
        for state in too_large:  # reported as MPA003 by the project stage
            source = state.source
            state.summary = FileSummary(
                source.relpath, source.module, source.is_package, too_large=state.too_large
            )
    else:
        report.notes.append(
            "no gevent or eventlet use found; nothing to audit (set [tool.patchaudit] framework"
            ' = "gevent" when a server such as `gunicorn -k gevent` patches this code)'
        )
        too_large = [s for s in too_large if s.source.relpath not in hidden]
        if too_large:
            report.notes.append(
                f"{len(too_large)} file(s) over max-file-size ({config.max_file_size} bytes) "
                "were not read"
            )

    project = None
    inputs = stored = None
    # what `pip install .` would ship: read here, like every input of the stage (see _stage)
    distributed = distributed_modules(config.root, config.max_file_size) if frameworks else None
    sorters = import_sorters(config.root, config.max_file_size) if frameworks else None
    if frameworks and reuse_stage and folder is not None:
        inputs = _stage_inputs(
            states, config, launchers, declared, distributed, mentions, cwd, sorters
        )
        stored = _stage.load(folder, files_name, inputs) if inputs is not None else None
        if stored is not None:
            _stage.replay(stored, report)
    run_stage = bool(frameworks) and stored is None
    # before the cache is written: a damaged cached summary is parsed again and stored right
    if run_stage and _decode_summaries(states, jobs, config.max_file_size, report):
        changed = True
        if inputs is not None:
            inputs = _stage_inputs(
                states, config, launchers, declared, distributed, mentions, cwd, sorters
            )
    if folder is not None and (changed or len(cached) != len(states)):
        _cache.store_files(
            folder,
            files_name,
            {s.source.relpath: _row(s) for s in states if s.digest is not None},
        )
    if run_stage:
        from ._evaluate import evaluate

        if progress is not None:  # simulating the programs' imports can take a second or two
            progress(f"building the model of {len(states):,} files")

        marks = _stage.mark(report)
        project = evaluate(
            states_to_summaries(states),
            config,
            launchers,
            declared,
            distributed or frozenset(),
            mentions,
            report,
            cwd=cwd,
            cache=folder,
            sorters=sorters,
        )
        if inputs is not None and folder is not None and project is not None:
            _stage.store(folder, files_name, inputs, report, marks, project.index, started_ns)
    reported = [s for s in states if s.source.relpath not in hidden] if hidden else states
    report.files_seen = len(reported)
    report.files_analyzed = sum(1 for s in reported if s.has_summary and not s.too_large)
    report.files_failed = sum(1 for s in reported if s.failed)
    if hidden:
        report.findings = [f for f in report.findings if f.path not in hidden]
        errors = len(report.errors)
        report.errors = [e for e in report.errors if not _about(e, hidden)]
        if frameworks:
            note = _model_note(len(reported), len(states), config.root, cwd)
            if errors > len(report.errors):
                note += f"; {errors - len(report.errors)} of the other files could not be analysed"
            report.notes.append(note)
    report.findings.sort(key=lambda f: f.sort_key)
    return report, project


def _model_files(
    named: list[SourceFile], paths: list[Path], config: Config, cwd: Path
) -> list[SourceFile]:
    """Every file under the root, as a walk of the root finds it, plus the named files that
    walk does not take (an extensionless script, a file ``.gitignore`` excludes).

    A named file replaces the root's entry for the same file, so it keeps the spelling and
    module name it was named with (a path through a symlinked folder within the tree).
    """
    root = os.path.normpath(os.path.join(cwd, config.root))
    if any(os.path.normpath(os.path.join(cwd, p)) == root for p in paths):
        return named  # the root was named: its walk is the model already
    walked, _problems = discover(  # problems outside the named paths are not reported
        [Path(root)],
        exclude=config.exclude,
        root=config.root,
        cwd=cwd,
        respect_gitignore=config.respect_gitignore,
    )
    by_path = {str(f.path): f for f in walked}
    real_root = os.path.realpath(root)
    for source in named:
        key = str(source.path)
        if key not in by_path:  # not walked, or walked under another spelling
            real = os.path.realpath(source.path)
            if real.startswith(real_root + os.sep):
                by_path.pop(root + real[len(real_root) :], None)
        by_path[key] = source
    files = list(by_path.values())
    files.sort(key=lambda f: f.relpath.replace("/", "\0"))  # discover's order
    return files


def _about(error: str, relpaths: frozenset[str]) -> bool:
    """Whether an error line (``relpath: reason``) is about one of ``relpaths``."""
    start = error.find(": ")
    while start != -1:
        if error[:start] in relpaths:
            return True
        start = error.find(": ", start + 1)
    return False


def _model_note(checked: int, modelled: int, root: Path, cwd: Path) -> str:
    try:
        shown = root.relative_to(cwd).as_posix()
    except ValueError:
        shown = str(root)
    files = "1 file" if checked == 1 else f"{checked} files"
    return (
        f"{files} checked against the whole project: the model spans {modelled} files under "
        f"{shown}; findings in other files are not shown"
    )


def _stage_inputs(
    states: list[_FileState],
    config: Config,
    launchers: list[Launcher],
    declared: frozenset[str],
    distributed: frozenset[str] | None,
    mentions: frozenset[str],
    cwd: Path,
    sorters: ImportSorters | None,
) -> str | None:
    # the summary, not the bytes: an edit that changes no summary changes no finding (a path
    # is cwd plus relpath, and cwd is keyed)
    files = [
        (s.source.relpath, s.source.module, s.source.is_package, str(s.source.target))
        + (s.summary_digest, s.relevant, s.too_large, s.failed)
        for s in states
    ]
    parts = [config.fingerprint(), launchers, declared, distributed or frozenset(), mentions, cwd]
    return _stage.inputs_of(files, *parts, sorters=sorters)


def states_to_summaries(states: list[_FileState]) -> list[tuple[SourceFile, FileSummary | None]]:
    return [(s.source, s.summary) for s in states]


def _trigger_regex() -> re.Pattern[bytes]:
    words = {b"import"}
    for rule in REGISTRY.values():
        words.update(rule.triggers)
    return re.compile(b"|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


def _cache_folder(config: Config, cwd: Path, report: Report) -> _cache.Folder | None:
    folder, problem = _cache.cache_folder(config.root)
    if problem is not None:
        path = Path(os.environ.get("PATCHAUDIT_CACHE_DIR") or config.root / _cache.FOLDER_NAME)
        try:
            shown = path.relative_to(cwd).as_posix()
        except ValueError:
            shown = str(path)
        report.warnings.append(f"cache not used: {shown} {problem}")
    return folder


def _prescan(
    state: _FileState,
    row: _cache.FileRow | None,
    trigger_rx: re.Pattern[bytes],
    report: Report,
    limit: int,
    started_ns: int,
) -> bool:
    """Fill ``state`` from the cache or from the file's bytes; True when it read the file."""
    source = state.source
    try:
        st = os.lstat(source.readable)  # discovery resolved links within the tree already
        if not stat.S_ISREG(st.st_mode):  # replaced since discovery: never open it
            raise OSError(0, "not a regular file")
        if st.st_size > limit:
            state.too_large = st.st_size
            return False
        entry = row.entry if row is not None else None
        if entry is not None and (entry.module, entry.is_package) != (
            source.module,
            source.is_package,
        ):
            row = entry = None  # the summary depends on the module name, not only on the bytes
        if row is not None and _cache.same_stat(st, row.entry.stat):  # unchanged: not even read
            state.stat, state.digest = row.entry.stat, row.entry.digest
            _take(state, row)
            return False
        data = read_regular(source.readable, limit)
    except FileTooLargeError:  # grew since the lstat
        state.too_large = max(st.st_size, limit + 1)
        return False
    except OSError as exc:
        report.errors.append(f"{source.relpath}: cannot read ({exc.strerror or exc})")
        state.failed = True
        return False
    state.stat = _cache.stat_key(st, started_ns)
    state.digest = _cache.content_hash(data)
    if row is not None and row.entry.digest == state.digest:
        _take(state, row)
        return True
    # These regexes have no literal prefix, so searching with them runs at regex speed over the
    # whole file; a substring test first spares almost every file that scan, with the same result.
    mentions: set[str] = set()
    if b"gevent" in data or b"eventlet" in data:
        mentions.update(m.decode() for m in FRAMEWORK_MENTION.findall(data))
    mentions.update(
        framework
        for rx, framework, names in _patcher_imports()
        if any(name in data for name in names) and rx.search(data)
    )
    state.mentions = frozenset(mentions)
    state.relevant = bool(mentions) or trigger_rx.search(data) is not None
    return True


def _row(state: _FileState) -> _cache.FileRow:
    """The file's row for the cache: the row it was read from when nothing in it changed."""
    entry = _cache.FileEntry(
        state.stat,
        state.digest or "",
        state.source.module,
        state.source.is_package,
        state.mentions,
        state.relevant,
        state.summary_digest,
    )
    # `is`: the text is the row's own unless the file was parsed again (a damaged summary)
    if state.cached is not None and state.cached.entry == entry and state.cached.text is state.text:
        return state.cached
    return _cache.FileRow(entry, state.text)


def _take(state: _FileState, row: _cache.FileRow) -> None:
    """Use a cached row; its summary is decoded only if the project stage runs."""
    state.cached = row
    entry = row.entry
    state.mentions, state.relevant = entry.mentions, entry.relevant
    state.text, state.summary_digest = row.text, entry.summary_digest


def _decode_summaries(
    states: list[_FileState], jobs: int | None, limit: int, report: Report
) -> bool:
    """Decode the cached summaries the project stage needs; a damaged one is parsed again
    (True: some were)."""
    damaged = []
    for state in states:
        if state.summary is None and state.summary_digest is not None:
            state.summary = _cache.decode_summary(state.text)
            if state.summary is None:
                state.summary_digest, state.text = None, "null"
                damaged.append(state)
    if damaged:
        _parse_all(damaged, jobs, limit, report, None)
    return bool(damaged)


@cache
def _patcher_imports() -> tuple[tuple[re.Pattern[bytes], str, tuple[bytes, ...]], ...]:
    """Imports of packages known to patch when imported (grequests): such a program uses gevent.

    Each regex comes with the module names it looks for: a file without any of them can't match.
    """
    by_framework: dict[str, list[str]] = {}
    for module, entry in known_patchers().items():
        framework = entry["call"].partition(".")[0]
        by_framework.setdefault(framework, []).append(module)
    return tuple(
        (
            re.compile(
                rb"^[ \t]*(?:import|from)[ \t]+(?:%s)\b"
                % "|".join(re.escape(n) for n in names).encode(),
                re.M,
            ),
            fw,
            tuple(n.encode() for n in names),
        )
        for fw, names in sorted(by_framework.items())
    )


def _frameworks_to_audit(
    config: Config, launchers: list[Launcher], declared: frozenset[str]
) -> frozenset[str]:
    """Frameworks the project runs under besides what its code names: configured, a run-time
    dependency, or what a launcher patches with (`gunicorn -k gevent` in a Procfile)."""
    if config.framework != "auto":
        return frozenset({config.framework})
    found = {launcher.framework for launcher in launchers if launcher.framework}
    return frozenset(found) | declared


def _parse_all(
    states: list[_FileState],
    jobs: int | None,
    limit: int,
    report: Report,
    progress: Callable[[str], None] | None,
) -> None:
    total = len(states)
    told = None if progress is None else (lambda done: progress(f"parsed {done:,}/{total:,} files"))
    work = [
        (s.source.relpath, s.source.module, s.source.is_package, str(s.source.readable), limit)
        for s in states
    ]
    for state, parsed in zip(states, parse_all(work, jobs, told), strict=True):
        if parsed is not None:
            state.summary, state.text, state.summary_digest = parsed
        else:
            report.errors.append(f"{state.source.relpath}: {WORKER_DIED}")
            state.failed = True
