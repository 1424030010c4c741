"""Rules as data: a :class:`Rule` is metadata plus one small check function.

There are three kinds of check:

* ``file`` checks look at one parsed file (a :class:`~patchaudit.static.FileContext`) and yield
  :class:`Hit` objects. They are cached per file, so they must depend on the file alone.
* ``project`` checks look at the whole :class:`~patchaudit.static.Project` (import graph, patch
  points, every file's summary) and yield :class:`Hit` objects with a path.

* ``runtime`` checks look at what a probe process observed while importing and serving the
  application (a :class:`~patchaudit.runtime.RuntimeContext`) and yield hits with a path.

``scope`` says when a file hit counts: always, only in a gevent/eventlet program, or only when the
line executes before a patch point.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._findings import Category, Finding, Severity


class Scope(str, enum.Enum):
    ALWAYS = "always"
    GEVENT_PROGRAM = "gevent-program"
    PRE_PATCH = "pre-patch"


@dataclass
class Hit:
    """A match of a rule before configuration, suppression and reporting are applied."""

    line: int
    column: int
    args: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None  # overrides the rule's default when the case is stronger
    path: str | None = None  # project checks set it; file checks leave it to the engine
    context: str = "module"  # execution context of the line (see static._context)
    end_line: int | None = None
    end_column: int | None = None


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    category: Category
    severity: Severity
    summary: str
    message: str  # str.format template filled from Hit.args
    why: str
    fix: str
    bad: str
    good: str
    references: tuple[str, ...]  # FM-xx ids from the failure-mode catalogue, then public issues
    kind: str  # "file", "project" or "runtime"
    scope: Scope
    check: Callable[..., Iterable[Hit]] = field(compare=False, repr=False)
    triggers: tuple[
        bytes, ...
    ] = ()  # byte strings one of which must occur for a file check to fire
    # Project-level condition for a file hit to count, e.g. "the installed gevent patches X".
    applies: Callable[[Any, Hit], bool] | None = field(default=None, compare=False, repr=False)

    @property
    def failure_modes(self) -> tuple[str, ...]:
        return tuple(r for r in self.references if r.startswith("FM-"))

    @property
    def docs_path(self) -> str:
        return f"docs/rules/{self.code}.md"

    def render(self, hit: Hit) -> str:
        return self.message.format(**hit.args)

    def finding(self, hit: Hit, path: str | None = None, *, test: str | None = None) -> Finding:
        """The reported form of ``hit``: the one place a rule's data becomes a finding."""
        return Finding(
            rule=self.code,
            category=self.category,
            severity=hit.severity or self.severity,
            path=path or hit.path or "<unknown>",
            line=hit.line,
            column=hit.column,
            message=self.render(hit),
            fix=self.fix,
            evidence=hit.evidence,
            end_line=hit.end_line,
            end_column=hit.end_column,
            **({"test": test} if test is not None else {}),
        )


REGISTRY: dict[str, Rule] = {}


def rule(
    *,
    code: str,
    name: str,
    category: Category,
    severity: Severity,
    summary: str,
    message: str,
    why: str,
    fix: str,
    bad: str,
    good: str,
    references: tuple[str, ...],
    kind: str = "file",
    scope: Scope = Scope.ALWAYS,
    triggers: tuple[bytes, ...] = (),
    applies: Callable[[Any, Hit], bool] | None = None,
) -> Callable[[Callable[..., Iterable[Hit]]], Callable[..., Iterable[Hit]]]:
    """Register a check function together with the data that describes it."""

    def register(check: Callable[..., Iterable[Hit]]) -> Callable[..., Iterable[Hit]]:
        add_rule(
            Rule(
                code=code,
                name=name,
                category=category,
                severity=severity,
                summary=summary,
                message=message,
                why=why.strip(),
                fix=fix.strip(),
                bad=bad.strip("\n"),
                good=good.strip("\n"),
                references=references,
                kind=kind,
                scope=scope,
                check=check,
                triggers=triggers,
                applies=applies,
            )
        )
        return check

    return register


def add_rule(new: Rule) -> None:
    if new.code in REGISTRY:
        raise ValueError(f"duplicate rule code {new.code}")
    if any(r.name == new.name for r in REGISTRY.values()):
        raise ValueError(f"duplicate rule name {new.name}")
    if new.kind not in ("file", "project", "runtime"):
        raise ValueError(f"{new.code}: kind must be 'file', 'project' or 'runtime'")
    REGISTRY[new.code] = new
