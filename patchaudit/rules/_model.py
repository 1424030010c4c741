"""Rules as data: a :class:`Rule` is metadata plus one small check function.

Each rule declares the runners that execute its check (:class:`Runner`), so no consumer keeps a
list of rules to skip:

* ``file`` checks look at one parsed file (a :class:`~patchaudit.model.source.FileContext`) and
  yield :class:`Hit` objects. They are cached per file, so they must depend on the file alone.
* ``project`` checks look at the whole project model of the static engine (import graph, patch
  points, every file's summary) and yield :class:`Hit` objects with a path.
* ``probe`` and ``pytest`` checks look at what a recorded process did (a
  :class:`~patchaudit.model.facts.RuntimeContext`): the child process of `patchaudit TARGET`,
  or the test process of `pytest --gevent-audit`. Most runtime rules run in both; a rule that
  reads events only one of them records declares only that one.

``scope`` says when a file hit counts: always, only in a gevent/eventlet program, or only when the
line executes before a patch point.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._findings import Category, Finding, Severity

#: Where every ``docs/rules/<CODE>.md`` page is published (SARIF ``helpUri``, JSON ``url``).
DOCS_BASE_URL = "https://github.com/patchaudit/patchaudit/blob/main"


class Runner(str, enum.Enum):
    """What executes a rule's check, and on what it looks at."""

    FILE = "file"  # the static engine, once per parsed file (cached)
    PROJECT = "project"  # the static engine, once over the whole project model
    PROBE = "probe"  # the runtime audit (`patchaudit TARGET`), on the probe's events
    PYTEST = "pytest"  # the pytest plugin, on the test process's events


#: The usual runners of a runtime rule: both recorders emit the events it reads.
RUNTIME = (Runner.PROBE, Runner.PYTEST)
_STATIC = frozenset({Runner.FILE, Runner.PROJECT})
_RUNNERS_OF_KIND = {
    "file": frozenset({Runner.FILE}),
    "project": frozenset({Runner.PROJECT}),
    "runtime": frozenset(RUNTIME),
}


class Scope(str, enum.Enum):
    ALWAYS = "always"
    GEVENT_PROGRAM = "gevent-program"
    PRE_PATCH = "pre-patch"
    # in a gevent program, in a module that is imported (holding the import lock), not a script
    # that only ever runs as `__main__`
    GEVENT_IMPORTED = "gevent-imported"
    # in the code that starts a program: an entry module, or one its start-up imports before
    # patching; a library's patch helper is called by design by the application's entry point
    ENTRY = "entry"


@dataclass
class Hit:
    """A match of a rule before configuration, suppression and reporting are applied."""

    line: int
    column: int
    args: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None  # overrides the rule's default when the case is stronger
    path: str | None = None  # project checks set it; file checks leave it to the engine
    context: str = "module"  # execution context of the line (see model.source)
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
    scope: Scope
    check: Callable[..., Iterable[Hit]] = field(compare=False, repr=False)
    triggers: tuple[
        bytes, ...
    ] = ()  # byte strings one of which must occur for a file check to fire
    # Project-level condition for a file hit to count, e.g. "the installed gevent patches X".
    applies: Callable[[Any, Hit], bool] | None = field(default=None, compare=False, repr=False)
    runners: frozenset[Runner] = field(default=frozenset(), kw_only=True)
    #: ``file``, ``project`` or ``runtime``: how `patchaudit rules` and the docs group it. Derived
    #: from ``runners``; still accepted instead of them, so a rule built with ``kind="file"``
    #: (older code and tests) keeps working.
    kind: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        runners = self.runners
        if not runners:
            if self.kind not in _RUNNERS_OF_KIND:
                raise ValueError(f"{self.code}: kind must be 'file', 'project' or 'runtime'")
            runners = _RUNNERS_OF_KIND[self.kind]
        runners = frozenset(runners)
        kind = next(iter(runners)).value if runners <= _STATIC else "runtime"
        if self.kind and self.kind != kind:
            raise ValueError(f"{self.code}: kind {self.kind!r} does not match its runners")
        object.__setattr__(self, "runners", runners)  # frozen: set once, here
        object.__setattr__(self, "kind", kind)

    def runs_in(self, runner: Runner) -> bool:
        return runner in self.runners

    @property
    def failure_modes(self) -> tuple[str, ...]:
        return tuple(r for r in self.references if r.startswith("FM-"))

    @property
    def docs_path(self) -> str:
        return f"docs/rules/{self.code}.md"

    @property
    def docs_url(self) -> str:
        """The rule's page on the repository's default branch: stable while the code exists."""
        return f"{DOCS_BASE_URL}/{self.docs_path}"

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
    runners: Runner | tuple[Runner, ...] = Runner.FILE,
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
                runners=frozenset((runners,) if isinstance(runners, Runner) else runners),
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
    if not new.runners or (new.runners & _STATIC and len(new.runners) > 1):
        raise ValueError(f"{new.code}: a rule runs in one static runner, or in runtime runners")
    REGISTRY[new.code] = new
