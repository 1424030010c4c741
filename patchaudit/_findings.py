"""The finding model shared by every patchaudit surface (static check, runtime audit, plugin)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


class Category(str, enum.Enum):
    """The fixed category vocabulary; other tools depend on these exact strings."""

    PATCH_ORDER = "patch-order"
    STALE_REFERENCE = "stale-reference"
    EVENTLET_COEXISTENCE = "eventlet-coexistence"
    UNPATCHED_SIGNAL = "unpatched-signal"
    UNPATCHED_QUEUE = "unpatched-queue"
    BLOCKING_CALL = "blocking-call"
    INCOMPATIBLE_LIBRARY = "incompatible-library"
    FORK_AFTER_PATCH = "fork-after-patch"
    PARTIAL_PATCH = "partial-patch"
    LIBRARY_PATCHES = "library-patches"
    PARSE_ERROR = "parse-error"


@dataclass(frozen=True)
class Finding:
    """One problem at one place. ``path`` is relative to the working directory."""

    rule: str
    category: Category
    severity: Severity
    path: str
    line: int
    column: int
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    end_line: int | None = field(default=None, compare=False)
    end_column: int | None = field(default=None, compare=False)
    test: str | None = None  # pytest node id, for findings the pytest plugin ties to one test
    process: int | None = None  # `patchaudit run`: the pid it was first seen in (Report.processes)
    # `check`: the edits that fix it (a patchaudit.fixes.Fix); `fix` stays the prose advice
    autofix: Any = field(default=None, compare=False, hash=False)

    def fix_applies(self, unsafe: bool = False) -> bool:
        """Whether ``--fix`` (``unsafe``: with ``--unsafe-fixes``) applies this finding's
        autofix: ruff's ``[*]``."""
        applicability = getattr(getattr(self.autofix, "applicability", None), "value", None)
        return applicability == "safe" or (unsafe and applicability == "unsafe")

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.column, self.rule)

    def to_json(self) -> dict[str, Any]:
        data = {
            "rule": self.rule,
            "category": self.category.value,
            "severity": self.severity.value,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            # where the offending expression ends (inclusive line, exclusive 1-based column);
            # null when the rule only knows where it starts
            "end_line": self.end_line,
            "end_column": self.end_column,
            "message": self.message,
            "fix": self.fix,
            "evidence": self.evidence,
        }
        if self.test is not None:
            data["test"] = self.test
        if self.process is not None:
            data["process"] = self.process
        if self.autofix is not None:  # ruff's fix object; `fix` keeps version 1's prose
            data["autofix"] = self.autofix.to_json()
        return data


@dataclass
class Report:
    """Everything one run produced: findings plus the problems that stopped analysis of a file."""

    target: str
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files_seen: int = 0
    files_analyzed: int = 0
    files_failed: int = 0  # discovered but unreadable
    notes: list[str] = field(default_factory=list)
    # About the run itself, not the code (a cache that can't be used): one stderr line each, in
    # every output format, so a machine-readable report never hides them.
    warnings: list[str] = field(default_factory=list)
    # Set when SIGINT/SIGTERM cut the run short ("interrupted by Ctrl-C: results are partial").
    interrupted: str | None = None
    timeline: dict[str, Any] | None = None  # the runtime audit's patch timeline
    # Files analysed through a symlink within the checked tree: shown path -> the real file.
    # Reporters read source lines from here or the shown path, never through a final symlink.
    source_files: dict[str, str] = field(default_factory=dict)
    # `check`: the programs found in the tree (entry, launcher, frameworks), for --show-programs
    # and the JSON report, so a user can see why a finding applies.
    programs: list[dict[str, Any]] = field(default_factory=list)
    # `patchaudit run`: every recorded process of the command ({"pid", "role", "argv"}).
    processes: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Severity}
        for finding in self.findings:
            counts[finding.severity.value] += 1
        return counts

    def worst_at_or_above(self, threshold: Severity) -> bool:
        return any(f.severity.rank >= threshold.rank for f in self.findings)
