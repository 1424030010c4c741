"""Fixes for findings, with ruff's applicability model (see ``docs/fixes.md``).

:func:`attach_fixes` gives each finding its fix (``Finding.autofix``) from the registry of
fixers; :func:`fix_files` applies the applicable ones to the files, one pass.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .._findings import Report
from .._safeio import read_regular, reason, write_atomic
from . import (  # noqa: F401  (register their fixers)
    libraries,
    patch_call,
    patch_position,
    signals,
    stale_import,
)
from ._apply import apply_fixes
from ._model import Applicability, Edit, Fix, Source
from ._registry import FIXERS

__all__ = ["Applicability", "Edit", "Fix", "FixResult", "attach_fixes", "fix_files"]

_MAX_BYTES = 4 * 1024 * 1024


def _read(cwd: Path, path: str, report: Report) -> bytes | None:
    if path in report.source_files:  # reached through a symlink: never edited in place
        return None
    try:
        return read_regular(cwd / path, _MAX_BYTES)
    except (OSError, ValueError):
        return None


def attach_fixes(report: Report, cwd: Path) -> None:
    """Set ``autofix`` on every finding a fixer can fix exactly (in place, order kept)."""
    sources: dict[str, Source | None] = {}
    for index, finding in enumerate(report.findings):
        fixer = FIXERS.get(finding.rule)
        if fixer is None:
            continue
        if finding.path not in sources:
            data = _read(cwd, finding.path, report)
            sources[finding.path] = None if data is None else Source.parse(data)
        source = sources[finding.path]
        fix = fixer(source, finding) if source is not None else None
        if fix is not None:
            report.findings[index] = replace(finding, autofix=fix)


@dataclass
class FixResult:
    fixed: int = 0  # findings whose fix was applied
    files: int = 0  # files changed
    diff: str = ""  # unified diff of every change (what --diff prints)
    errors: list[str] = field(default_factory=list)  # files that could not be written


def fix_files(report: Report, cwd: Path, *, unsafe: bool, write: bool) -> FixResult:
    """Apply the applicable fixes of ``report``'s findings; write the files only if ``write``."""
    result = FixResult()
    by_path: dict[str, list[Fix]] = {}
    for finding in report.findings:
        fix = finding.autofix
        if isinstance(fix, Fix) and fix.applicability.applied(unsafe):
            by_path.setdefault(finding.path, []).append(fix)
    for path, fixes in sorted(by_path.items()):
        data = _read(cwd, path, report)
        if data is None:
            continue
        new, count = apply_fixes(data, fixes)
        if not count:
            continue
        if write:
            try:
                write_atomic(cwd / path, new, (cwd / path).stat().st_mode & 0o7777)
            except OSError as exc:
                result.errors.append(f"cannot write the fixes to {path}: {reason(exc)}")
                continue
        result.fixed += count
        result.files += 1
        result.diff += _diff(path, data, new)
    return result


def _diff(path: str, old: bytes, new: bytes) -> str:
    lines = difflib.unified_diff(
        old.decode("utf-8-sig").splitlines(keepends=True),
        new.decode("utf-8-sig").splitlines(keepends=True),
        fromfile=f"a/{path}",
        tofile=f"b/{path}",
    )
    # a last line without a newline: marked as `diff` does, so the output stays a valid patch
    marker = "\n\\ No newline at end of file\n"
    return "".join(line if line.endswith("\n") else line + marker for line in lines)
