"""`patchaudit check`: discover files, pre-scan, parse in parallel with a cache, then evaluate.

Only files that can matter are parsed. A project that never mentions gevent or eventlet, nor
imports a package known to patch on import (grequests), and is not declared to run under one (see
``framework``) has nothing to audit, so the byte-level pre-scan is the whole run. In a gevent
program every file that imports something or contains a rule's trigger is parsed once, in worker
processes, and its summary cached by content hash.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

from .. import rules as _rules  # noqa: F401  (registers every rule)
from .._config import Config
from .._findings import Report
from ..rules._model import REGISTRY
from . import _cache
from ._discover import SourceFile, discover
from ._known import known_patchers
from ._summary import FileSummary, summarize

if TYPE_CHECKING:
    from ._project import Project

FRAMEWORK_MENTION = re.compile(rb"\b(?:gevent|eventlet)\b")
GUNICORN_WORKER = re.compile(rb"""worker_class\s*=\s*["'](gevent|eventlet)""")
DECLARED_DEPENDENCY = re.compile(r"""(?im)^\s*["']?(gevent|eventlet)\b""")
PARALLEL_THRESHOLD = 48  # below this, starting worker processes costs more than it saves


@dataclass
class _FileState:
    source: SourceFile
    size: int = -1
    mtime_ns: int = -1
    digest: str | None = None
    mentions: frozenset[str] = frozenset()  # "gevent" / "eventlet" mentioned in the bytes
    relevant: bool = False  # imports something or contains a trigger: worth parsing
    summary: FileSummary | None = None


def check(
    paths: list[Path],
    config: Config,
    *,
    cwd: Path,
    use_cache: bool = True,
    jobs: int | None = None,
) -> Report:
    """Run the static analysis over ``paths`` and return the report."""
    return analyze(paths, config, cwd=cwd, use_cache=use_cache, jobs=jobs)[0]


def analyze(
    paths: list[Path],
    config: Config,
    *,
    cwd: Path,
    use_cache: bool = True,
    jobs: int | None = None,
) -> tuple[Report, Project | None]:
    """Like :func:`check`, also returning the project model (the runtime audit reuses it)."""
    target = " ".join(str(p) for p in paths)
    report = Report(target=target)
    files, problems = discover(
        paths,
        exclude=config.exclude,
        root=config.root,
        cwd=cwd,
        respect_gitignore=config.respect_gitignore,
    )
    report.errors.extend(problems)
    report.files_seen = len(files)

    cache_path = (
        _cache.cache_dir(config.root) / f"files-{_cache.files_key(config.fingerprint())}.pickle"
    )
    cached = (_cache.load(cache_path) if use_cache else None) or {}
    trigger_rx = _trigger_regex()
    states = [_FileState(f) for f in files]
    changed = False
    for state in states:
        changed |= _prescan(state, cached.get(state.source.relpath), trigger_rx, report)

    global_frameworks = _global_frameworks(states, config)
    mentions = frozenset().union(*(s.mentions for s in states)) if states else frozenset()
    frameworks = global_frameworks | {m for m in mentions if ":" not in m}
    if frameworks:
        to_parse = [s for s in states if s.relevant and s.summary is None and s.digest]
        _parse_all(to_parse, jobs)
        changed |= bool(to_parse)
    else:
        report.notes.append(
            "no gevent or eventlet use found; nothing to audit (set [tool.patchaudit] framework"
            ' = "gevent" when a server such as `gunicorn -k gevent` patches this code)'
        )
    report.files_analyzed = sum(1 for s in states if s.summary is not None)

    if use_cache and (changed or len(cached) != len(states)):
        _cache.store(
            cache_path,
            {
                s.source.relpath: (s.size, s.mtime_ns, s.digest, s.mentions, s.relevant, s.summary)
                for s in states
                if s.digest is not None
            },
        )
    project = None
    if frameworks:
        from ._evaluate import evaluate

        project = evaluate(
            states_to_summaries(states),
            config,
            global_frameworks,
            mentions,
            report,
            cwd=cwd,
            use_cache=use_cache,
        )
    report.findings.sort(key=lambda f: f.sort_key)
    return report, project


def states_to_summaries(states: list[_FileState]) -> list[tuple[SourceFile, FileSummary | None]]:
    return [(s.source, s.summary) for s in states]


def _trigger_regex() -> re.Pattern[bytes]:
    words = {b"import"}
    for rule in REGISTRY.values():
        words.update(rule.triggers)
    return re.compile(b"|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


def _prescan(
    state: _FileState, entry: tuple | None, trigger_rx: re.Pattern[bytes], report: Report
) -> bool:
    """Fill ``state`` from the cache or from the file's bytes; True when it read the file."""
    try:
        stat = os.stat(state.source.path)
    except OSError as exc:
        report.errors.append(f"{state.source.relpath}: cannot read ({exc.strerror or exc})")
        report.files_failed += 1
        return False
    state.size, state.mtime_ns = stat.st_size, stat.st_mtime_ns
    if entry is not None and (not isinstance(entry, tuple) or len(entry) != 6):
        entry = None  # written by another version: ignore
    if entry is not None and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
        _, _, state.digest, state.mentions, state.relevant, state.summary = entry
        return False
    try:
        with open(state.source.path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        report.errors.append(f"{state.source.relpath}: cannot read ({exc.strerror or exc})")
        report.files_failed += 1
        return False
    state.digest = _cache.content_hash(data)
    if entry is not None and entry[2] == state.digest:
        _, _, _, state.mentions, state.relevant, state.summary = entry
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
    if state.source.path.name.startswith("gunicorn"):
        # a gunicorn config choosing a gevent worker makes the whole project a gevent program
        mentions.update("gunicorn:" + m.decode() for m in GUNICORN_WORKER.findall(data))
    state.mentions = frozenset(mentions)
    state.relevant = bool(mentions) or trigger_rx.search(data) is not None
    return True


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


def _global_frameworks(states: list[_FileState], config: Config) -> frozenset[str]:
    """Frameworks that apply to every file: configured, declared, or a gunicorn worker class."""
    if config.framework != "auto":
        return frozenset({config.framework})
    found = {m.partition(":")[2] for s in states for m in s.mentions if m.startswith("gunicorn:")}
    return frozenset(found) | _declared_frameworks(config.root)


def _declared_frameworks(root: Path) -> frozenset[str]:
    """gevent/eventlet named as a dependency of the project (pre-commit passes single files)."""
    found: set[str] = set()
    for name in ("requirements.txt", "requirements.in", "setup.cfg"):
        try:
            text = (root / name).read_text(errors="replace")
        except OSError:
            continue
        found.update(m.lower() for m in DECLARED_DEPENDENCY.findall(text))
    try:
        text = (root / "pyproject.toml").read_text(errors="replace")
    except OSError:
        text = ""
    found.update(m.lower() for m in re.findall(r"""["'](gevent|eventlet)\b""", text))
    return frozenset(found)


def _summarize_path(args: tuple[str, str | None, bool, str]) -> FileSummary:
    relpath, module, is_package, path = args
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:  # changed or removed since the pre-scan read it
        summary = FileSummary(relpath, module, is_package)
        summary.internal_error = f"cannot read ({exc.strerror or exc})"
        return summary
    return summarize(relpath, module, is_package, data)


def _parse_all(states: list[_FileState], jobs: int | None) -> None:
    work = [
        (s.source.relpath, s.source.module, s.source.is_package, str(s.source.path)) for s in states
    ]
    workers = jobs or os.cpu_count() or 1
    if workers > 1 and len(work) >= PARALLEL_THRESHOLD:
        chunk = max(1, len(work) // (workers * 4))
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            results = list(pool.map(_summarize_path, work, chunksize=chunk))
    else:
        results = [_summarize_path(item) for item in work]
    for state, summary in zip(states, results, strict=True):
        state.summary = summary
