"""Findings from what a session recorded; the terminal section, the JSON file, xdist merging.

The findings come from the rule catalogue: the runtime rules run unchanged on the recorded
events (the same vocabulary as `patchaudit TARGET`), the plugin's own rules
(:mod:`patchaudit.rules.plugin`) read the plugin's events, and per-test hub blocking is rendered
with MPA851's metadata. ``[tool.patchaudit]`` ``select``/``ignore``/``per-file-ignores`` and
``# noqa`` comments apply (:mod:`patchaudit.judge`, as for `patchaudit check`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._findings import Category, Finding, Report, Severity
from ._session import AuditSession

if TYPE_CHECKING:  # the catalogue is imported only when there is something to judge
    from .._config import Config
    from ..judge import Judge
    from ..model.facts import RuntimeContext
    from ..rules._model import Hit, Rule

_FIX_WIDTH = 96


def build_findings(session: AuditSession) -> list[Finding]:
    """Every finding of this process (a worker's own, or a plain run's)."""
    if not session.involved():
        return []  # no gevent, no eventlet: nothing to judge, no catalogue to import
    from ..judge import Judge, source_noqa
    from ..rules import REGISTRY, Runner
    from ..rules.plugin import blocked_test_hits

    ctx = _context(session)
    # No static project here: the noqa comments are read from the files findings land in.
    judge = Judge(_config(session), session.invocation_dir, source_noqa(session.invocation_dir))
    findings: list[Finding] = []
    for rule in REGISTRY.values():
        if rule.runs_in(Runner.PYTEST):
            findings.extend(_judged(judge, rule, rule.check(ctx)))
    findings.extend(_judged(judge, REGISTRY["MPA851"], blocked_test_hits(ctx)))
    return findings


def _context(session: AuditSession) -> RuntimeContext:
    if session.context is None:
        session.context = _build_context(session)
    return session.context


def _build_context(session: AuditSession) -> RuntimeContext:
    from ..model.facts import TARGET_IMPORTER, Facts, RuntimeContext
    from ..rules.plugin import pytest_loaded

    events = [e for e in session.events if e.get("event") != "block"]
    events.append(session.usage_event())
    recorded = {e.get("module") for e in events if e.get("event") == "import"}
    rooted = []
    for event in events:
        # Imports made by pytest itself (its modules were loaded before we recorded) start the
        # chains, as the target does in `patchaudit TARGET`.
        if event.get("event") == "import" and event.get("importer") not in recorded:
            event = {**event, "importer": TARGET_IMPORTER}
        rooted.append(event)

    def noise(facts: Facts) -> list[dict[str, Any]]:
        """The noise floor: stale references held outside the project (pytest, its plugins)."""
        held = [
            e
            for e in rooted
            if e.get("event") == "stale" and not facts.is_app_file(e.get("holder_file"))
        ]
        return [*held, {"event": "done"}]

    return RuntimeContext.observe(
        rooted,
        app_roots=[session.rootdir],
        cwd=session.invocation_dir,
        mode="pytest",
        max_blocking=session.settings.threshold,
        concurrency=1,
        baseline_events=noise,
        startup_modules=pytest_loaded,
    )


def _judged(judge: Judge, rule: Rule, hits: Iterable[Hit]) -> Iterator[Finding]:
    for hit in hits:
        test = hit.evidence.get("test") if isinstance(hit.evidence, dict) else None
        found = judge.admit(rule, hit, test=str(test) if test else None)
        if found is not None:
            yield found


def _config(session: AuditSession) -> Config | None:
    """The project's ``[tool.patchaudit]``; a broken one is reported and ignored."""
    from .._config import ConfigError, load_config
    from ..rules import REGISTRY

    try:
        return load_config([session.rootdir], REGISTRY.keys())
    except ConfigError as exc:
        session.errors.append(f"[tool.patchaudit] ignored: {exc}")
        return None


# -- merging (xdist) ----------------------------------------------------------------------------
def to_wire(findings: Iterable[Finding], session: AuditSession) -> str:
    """What a worker sends to the controller (``workeroutput`` takes plain strings)."""
    from ..reporters._common import json_safe

    return json.dumps(
        json_safe(
            {
                "findings": [f.to_json() for f in findings],
                "errors": session.errors,
                "tests": session.tests,
                "state": session.describe_patch_state(final=True),
            }
        )
    )


def from_wire(text: str) -> tuple[list[Finding], list[str], int, str]:
    data = json.loads(text)
    findings = [
        Finding(
            rule=f["rule"],
            category=Category(f["category"]),
            severity=Severity(f["severity"]),
            path=f["path"],
            line=int(f["line"]),
            column=int(f["column"]),
            message=f["message"],
            fix=f["fix"],
            evidence=f.get("evidence") or {},
            end_line=f.get("end_line"),
            end_column=f.get("end_column"),
            test=f.get("test"),
        )
        for f in data.get("findings", [])
    ]
    return findings, list(data.get("errors", [])), int(data.get("tests", 0)), data.get("state", "")


def merge(groups: Iterable[Iterable[Finding]]) -> list[Finding]:
    """One list, worst first: the same session finding from several workers counts once."""
    seen: dict[tuple[str, str, int, str | None, str], Finding] = {}
    for group in groups:
        for finding in group:
            key = (
                finding.rule,
                finding.path,
                finding.line,
                finding.test,
                finding.message if finding.test else "",
            )
            seen.setdefault(key, finding)
    return sorted(seen.values(), key=_worst_first)


def _worst_first(finding: Finding) -> tuple[int, float, str, int, str, str]:
    blocked = finding.evidence.get("blocked_s") if isinstance(finding.evidence, dict) else None
    return (
        -finding.severity.rank,
        -float(blocked or 0),
        finding.rule,
        finding.line,
        finding.path,
        finding.test or "",
    )


# -- output -------------------------------------------------------------------------------------
def write_json(
    path: Path, findings: list[Finding], session: AuditSession, target: str, states: list[str]
) -> None:
    """The same document as `patchaudit --format json`, with ``test`` on per-test findings."""
    from ..reporters import make_reporter
    from ..rules import REGISTRY

    report = Report(target=target, findings=list(findings), errors=list(session.errors))
    report.timeline = timeline(session, states)
    with open(path, "w", encoding="utf-8") as stream:
        make_reporter("json", stream, color=False, rules=REGISTRY).report(report)


def timeline(session: AuditSession, states: list[str]) -> dict[str, Any]:
    ctx = _context(session)
    facts = ctx.facts
    loaded = sorted(m for m in ctx.startup_modules & ctx.patched_modules if not m.startswith("_"))
    if not session.involved():
        loaded = []
    return {
        "runner": "pytest",
        "python": ".".join(str(p) for p in sys.version_info[:3]),
        "gevent": _version("gevent"),
        "patch_state": states,
        "patches": [
            {
                "framework": p.framework,
                "function": p.function,
                "location": f"{facts.display(p.file)}:{p.line}",
                "arguments": p.kwargs or {},
            }
            for p in facts.patches
        ],
        "patched_modules_loaded_by_pytest": loaded,
        "threshold_s": session.settings.threshold,
        "tests": session.tests,
        "workers": session.workers,
    }


def _version(dist: str) -> str | None:
    module = sys.modules.get(dist)
    return getattr(module, "__version__", None)


def summary_lines(findings: list[Finding], session: AuditSession, states: list[str]) -> list[str]:
    """The terminal section: worst first, each with its fix; then one totals line."""
    problems = [f"internal error (audit incomplete): {e}" for e in session.errors]
    if not findings and not _saw_frameworks(session, states):
        return ["no gevent or eventlet in this test run: nothing to audit", *problems]
    lines: list[str] = []
    for finding in findings:
        where = f"{finding.path}:{finding.line}"
        lines.append(f"{finding.severity.value.upper()} {finding.rule} {where}: {finding.message}")
        evidence = finding.evidence if isinstance(finding.evidence, dict) else {}
        for frame in (evidence.get("blocked_stack") or [])[-3:]:
            lines.append(f"    at {frame}")
        lines.append(f"    fix: {_short(finding.fix)}")
    counts = {s: sum(f.severity is s for f in findings) for s in Severity}
    totals = ", ".join(_plural(counts[s], s.value) for s in Severity)
    state = "; ".join(dict.fromkeys(states)) or "not patched"
    lines.append(f"{totals}; {state}; threshold {session.settings.threshold:g}s")
    return [*lines, *problems]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 or word == "info" else f"{count} {word}s"


def _saw_frameworks(session: AuditSession, states: list[str]) -> bool:
    if any("imported" in s or not s.startswith("not patched") for s in states):
        return True
    return any(m in sys.modules for m in ("gevent", "eventlet")) or session.hub_tests > 0


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _FIX_WIDTH * 2 else text[: _FIX_WIDTH * 2 - 3] + "..."
