"""The project stage's output, reused when nothing it reads has changed.

The project stage (programs, import replays, project rules, noqa) is a function of its inputs. A
warm run whose summaries are all unchanged (an edit to a comment or a docstring, a file touched,
a branch switched and back) would rebuild the same programs and replay the same imports, which
on a large tree costs more than everything else in the run. Its output is stored with a digest
of every input known before it runs:

* each file of the model: path, module name, package flag, content hash, parsed or not;
* the configuration, the launchers found, the declared and mentioned frameworks, the cwd,
  the import sorters configured at the root;
* the installed gevent's patch lists (their own cache key), this interpreter and patchaudit
  itself (the files cache's name covers version and source files).

What the import replay reads from the installed environment is only known after it ran, so the
entry also lists the installed files it summarized and the folders it listed, with their stat
fields: a hit re-stats each of them (an upgraded package is a miss). Nothing is stored when one
of them changed too recently to trust its timestamps (see ``_cache.stat_key``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._findings import Finding, Report
from .._gevent_patches import PatchListError, patch_lists_key
from . import _cache
from ._commands import Launcher
from ._modules import ModuleIndex

__all__ = ["StageEntry", "inputs_of", "load", "mark", "replay", "store"]

ReportLists = ("findings", "errors", "notes", "warnings", "programs")


@dataclass(frozen=True)
class StageEntry:
    inputs: str  # inputs_of() of the run that produced it
    findings: list[Finding]
    errors: list[str]
    notes: list[str]
    warnings: list[str]
    programs: list[dict[str, Any]]
    files_read: list[tuple[str, _cache.StatKey]]  # installed modules the import replay read
    folders_listed: list[tuple[str, int]]  # folders it listed, with mtime_ns (-1: absent)


def inputs_of(
    files: list[tuple[object, ...]],
    config: str,
    launchers: list[Launcher],
    declared: frozenset[str],
    distributed: frozenset[str],
    mentions: frozenset[str],
    cwd: Path,
    *,
    sorters: object = None,
) -> str | None:
    """The digest the stage's output is keyed by: ``files`` says each file's path, module name,
    summary digest and state, ``config`` is the configuration's fingerprint; None when the
    installed gevent cannot be keyed (the stage then runs, and reports why)."""
    try:
        patches = patch_lists_key()
    except PatchListError:
        return None
    parts = [config, [repr(x) for x in launchers], sorted(declared), sorted(distributed)]
    parts += [sorted(mentions), str(cwd), patches, sys.executable, sys.path, files, repr(sorters)]
    blob = json.dumps(parts, default=repr, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def load(folder: _cache.Folder, files_name: str, inputs: str) -> StageEntry | None:
    """The stored output for exactly these inputs, if the environment it read is unchanged."""
    entry = _cache.load_stage(folder, _name(files_name), StageEntry)
    if entry is None or entry.inputs != inputs:
        return None
    for path, key in entry.files_read:
        try:
            if not _cache.same_stat(os.stat(path), key):
                return None
        except OSError:
            return None
    for path, mtime in entry.folders_listed:
        if _mtime(path) != mtime:
            return None
    return entry


def store(
    folder: _cache.Folder,
    files_name: str,
    inputs: str,
    report: Report,
    marks: dict[str, int],
    index: ModuleIndex,
    started_ns: int,
) -> None:
    """Store what the stage added to ``report`` since ``marks`` (see :func:`mark`)."""
    read = []
    for path in sorted(index.files_read):
        try:
            key = _cache.stat_key(os.stat(path), started_ns)
        except OSError:
            return
        if key is None:
            return  # changed within the last seconds: a later edit could keep its stat
        read.append((path, key))
    listed = []
    for path in sorted(index.folders_listed):
        mtime = _mtime(path)
        if mtime >= started_ns - _cache.RACY_NS:
            return
        listed.append((path, mtime))
    added = {name: getattr(report, name)[marks[name] :] for name in ReportLists}
    entry = StageEntry(inputs, **added, files_read=read, folders_listed=listed)
    _cache.store_stage(folder, _name(files_name), StageEntry, entry)


def mark(report: Report) -> dict[str, int]:
    """Where each of the report's lists ends before the stage runs."""
    return {name: len(getattr(report, name)) for name in ReportLists}


def replay(entry: StageEntry, report: Report) -> None:
    """Add a stored output to ``report``, as the stage itself would have."""
    for name in ReportLists:
        getattr(report, name).extend(getattr(entry, name))


def _name(files_name: str) -> str:
    return "stage-" + files_name.removeprefix("files-").removesuffix("l")


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1
