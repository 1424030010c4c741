"""The one judge: which rule hits become findings, for every surface.

`patchaudit check`, the runtime audit and the pytest plugin all turn a rule's :class:`Hit` into
a :class:`Finding` here, so ``select``/``ignore``, ``per-file-ignores`` (globs relative to the
configuration's root, whatever the working directory), ``# noqa`` and the bookkeeping behind
unused-noqa (MPA002) mean the same thing everywhere. :func:`merge` joins static and runtime
findings ("confirmed at run time").

It lives beside the finding model rather than in :mod:`patchaudit.model` because it needs the
configuration and the rule type; the model stays a leaf that the rules import.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._config import Config
from ._findings import Finding

if TYPE_CHECKING:
    from .rules._model import Hit, Rule


class Suppressor(Protocol):
    """A file's ``# noqa`` comments (the static engine's ``Suppressions``)."""

    def suppresses(self, code: str, line: int) -> bool: ...


#: The ``# noqa`` comments of a file by its cwd-relative path, or None when it has none known.
NoqaLookup = Callable[[str], Suppressor | None]

_UNKNOWN = "<unknown>"
UNUSED_NOQA = "MPA002"  # unused-noqa: judged after every other rule, from what they used
_CONFIRMED = " (confirmed at run time)"


def config_relative(path: str, root: Path, cwd: Path) -> str:
    """``path`` (relative to ``cwd``, as findings show it) relative to the config's ``root``:
    what ``per-file-ignores`` globs are written against. Pseudo-paths (``<pytest>``) and paths
    outside the root stay as they are."""
    if not path or path.startswith("<"):
        return path
    try:
        return (cwd / path).resolve().relative_to(_resolved(root)).as_posix()
    except ValueError:
        return path


@functools.lru_cache(maxsize=16)
def _resolved(root: Path) -> Path:
    """The root's real path: asked once per finding's file, a syscall per folder level."""
    return root.resolve()


class Judge:
    """Applies one configuration and one set of ``# noqa`` comments to rule hits.

    ``dedupe`` drops a second hit of the same rule at the same place: the static engine needs it
    because a file check and a project check, or two simulations, can report one place twice;
    the runtime recorders report each observed event once (a test that blocks the hub twice is
    two findings), so they leave it off.
    """

    def __init__(
        self,
        config: Config | None,
        cwd: Path,
        noqa: NoqaLookup | None = None,
        *,
        dedupe: bool = False,
    ) -> None:
        self.config = config
        self.cwd = cwd
        self._noqa = noqa
        self._dedupe = dedupe
        self._seen: set[tuple[str, str, int, int]] = set()
        #: path -> {(line, code)} of the ``# noqa`` entries that silenced a hit (for MPA002).
        self.used: dict[str, set[tuple[int, str]]] = {}
        self._codes: dict[str, frozenset[str]] = {}  # path -> codes: big trees repeat paths

    def enabled(self, code: str, path: str) -> bool:
        """Whether ``code`` is selected for ``path`` (cwd-relative), per-file-ignores included."""
        if self.config is None:
            return True
        codes = self._codes.get(path)
        if codes is None:
            relative = config_relative(path, self.config.root, self.cwd)
            codes = self._codes[path] = self.config.codes_for(relative)
        return code in codes

    def suppressed(self, code: str, path: str, line: int) -> bool:
        """Whether a ``# noqa`` silences ``code`` at ``path:line``; a silencing is recorded."""
        found = self._noqa(path) if self._noqa is not None else None
        if found is None or not found.suppresses(code, line):
            return False
        self.used.setdefault(path, set()).add((line, code))
        return True

    def admit(
        self, rule: Rule, hit: Hit, path: str | None = None, *, test: str | None = None
    ) -> Finding | None:
        """The finding for ``hit``, or None when configuration, a duplicate or noqa drop it."""
        where = path or hit.path or _UNKNOWN
        if not self.enabled(rule.code, where):
            return None
        if self._dedupe:
            key = (rule.code, where, hit.line, hit.column)
            if key in self._seen:
                return None
            self._seen.add(key)
        if self.suppressed(rule.code, where, hit.line):
            return None
        return rule.finding(hit, where, test=test)

    def judge(self, rule: Rule, hits: Iterable[Hit]) -> list[Finding]:
        """:meth:`admit` over ``hits``, keeping what survives."""
        return [f for f in (self.admit(rule, hit) for hit in hits) if f is not None]


def project_noqa(project: Any) -> NoqaLookup:
    """The ``# noqa`` comments the static engine read, by cwd-relative path (its project's
    summaries are keyed by the same paths that findings show)."""

    def lookup(path: str) -> Suppressor | None:
        summary = project.summaries.get(path)
        return summary.suppressions if summary is not None else None

    return lookup


def source_noqa(cwd: Path) -> NoqaLookup:
    """The ``# noqa`` comments read from the files themselves, for callers with no static
    project (the pytest plugin, an audit run without the static check). Each file is parsed
    once, and only when a finding lands in it; pseudo-paths (``<pytest>``) have none."""
    from .model.noqa import read_suppressions

    found: dict[str, Suppressor | None] = {}

    def lookup(path: str) -> Suppressor | None:
        if not path or path.startswith("<"):
            return None
        if path not in found:
            found[path] = read_suppressions(str(cwd / path))
        return found[path]

    return lookup


def recount_unused_noqa(
    findings: list[Finding],
    project: Any,
    used: dict[str, set[tuple[int, str]]],
    config: Config | None,
    cwd: Path,
) -> list[Finding]:
    """MPA002 again, counting the ``# noqa`` entries that silenced runtime hits (``used``): a
    comment that silences a runtime finding is in use, though no static rule fired there."""
    from .rules import REGISTRY

    if not used:
        return findings
    for path, entries in used.items():
        project.suppressions_used.setdefault(path, set()).update(entries)
    rule = REGISTRY[UNUSED_NOQA]
    judge = Judge(config, cwd, project_noqa(project), dedupe=True)
    return [f for f in findings if f.rule != UNUSED_NOQA] + judge.judge(rule, rule.check(project))


def merge(static: list[Finding], runtime: list[Finding]) -> list[Finding]:
    """One list: a runtime finding at the same place and category as a static one confirms it.

    The static finding stays (its message explains the code); it gains "confirmed at run time"
    and the runtime rule in its evidence, and the runtime duplicate is dropped.
    """
    merged = list(static)
    first_at: dict[tuple[object, str, int], int] = {}
    for index, finding in enumerate(merged):
        first_at.setdefault((finding.category, finding.path, finding.line), index)
    extra = []
    for finding in runtime:
        key = (finding.category, finding.path, finding.line)
        if key not in first_at:
            extra.append(finding)
            continue
        twin = merged[first_at[key]]
        evidence = dict(twin.evidence)
        evidence["confirmed_at_runtime"] = [*evidence.get("confirmed_at_runtime", []), finding.rule]
        evidence["runtime"] = [*evidence.get("runtime", []), f"{finding.rule}: {finding.message}"]
        message = twin.message
        if not message.endswith(_CONFIRMED):
            message += _CONFIRMED
        merged[first_at[key]] = dataclasses.replace(twin, message=message, evidence=evidence)
    return [*merged, *extra]
