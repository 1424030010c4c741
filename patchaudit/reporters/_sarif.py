"""``sarif``: SARIF 2.1.0 for GitHub code scanning and other SARIF viewers, built with stdlib json.

Paths are repo-relative URIs under ``%SRCROOT%`` (not absolute ``file://`` URIs as ruff writes) so
the same alert matches across checkouts, and every result carries ``partialFingerprints``: GitHub's
``upload-sarif`` action computes them when missing, but the raw upload API does not, and without
them alerts get duplicated.

Fingerprint: sha256 over (rule code, path, stripped text of the flagged source line, occurrence
index among findings with the same first three values). It survives code moving up or down the
file; it changes when the flagged line itself is edited, as GitHub's own line hash does. If the
source cannot be read the line number replaces the text, which is stable only while lines don't
shift.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from .._findings import Finding, Report, Severity
from .._version import __version__
from ..rules._model import Rule
from ._common import SourceCache, write_text
from ._json import dumps

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/patchaudit/patchaudit"
SRCROOT = "%SRCROOT%"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def artifact_uri(path: str) -> str:
    # A SARIF uri must be a valid URI reference: percent-encode spaces, '%', '#', ... keep '/'.
    # surrogateescape turns undecodable file-name bytes back into their original %XX form.
    return quote(path, safe="/", errors="surrogateescape")


def base_uri(cwd: Path) -> str:
    uri = cwd.resolve().as_uri()
    return uri if uri.endswith("/") else uri + "/"


def rule_descriptor(rule: Rule) -> dict[str, Any]:
    help_markdown = (
        f"{rule.fix}\n\n**Bad**\n\n```python\n{rule.bad}\n```\n\n"
        f"**Good**\n\n```python\n{rule.good}\n```\n"
    )
    help_text = f"{rule.fix}\n\nBad:\n{rule.bad}\n\nGood:\n{rule.good}\n"
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.why},
        "help": {"text": help_text, "markdown": help_markdown},
        "helpUri": rule.docs_url,
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        # SARIF requires tags to be unique.
        "properties": {"tags": list(dict.fromkeys([rule.category.value, *rule.failure_modes]))},
    }


def fallback_descriptor(finding: Finding) -> dict[str, Any]:
    """For a code missing from the rule table (e.g. a runtime-only finding): still a valid rule."""
    return {
        "id": finding.rule,
        "shortDescription": {"text": finding.rule},
        "defaultConfiguration": {"level": _LEVEL[finding.severity]},
        "properties": {"tags": [finding.category.value]},
    }


def fingerprint(code: str, path: str, line_text: str, occurrence: int) -> str:
    payload = "\0".join((code, path, line_text, str(occurrence)))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def region(f: Finding) -> dict[str, int]:
    # SARIF lines and columns are 1-based, as Finding's are; clamp in case a whole-file finding
    # uses 0, and drop an end position that would precede the start (the schema forbids it).
    start_line, start_col = max(f.line, 1), max(f.column, 1)
    reg = {"startLine": start_line, "startColumn": start_col}
    end_line = f.end_line if f.end_line is not None else start_line
    if end_line < start_line or (f.end_line is None and f.end_column is None):
        return reg
    if f.end_column is not None and (end_line > start_line or f.end_column >= start_col):
        reg["endLine"] = end_line
        reg["endColumn"] = f.end_column
    elif f.end_line is not None:
        reg["endLine"] = end_line
    return reg


def sarif_fix(path: str, fix: Any) -> dict[str, Any]:
    """A SARIF ``fix``: one artifact change, each edit a region deleted and text inserted."""
    replacements = [
        {
            "deletedRegion": {
                "startLine": e.location[0],
                "startColumn": e.location[1],
                "endLine": e.end_location[0],
                "endColumn": e.end_location[1],
            },
            "insertedContent": {"text": e.content},
        }
        for e in fix.edits
    ]
    change = {
        "artifactLocation": {"uri": artifact_uri(path), "uriBaseId": SRCROOT},
        "replacements": replacements,
    }
    text = f"{fix.message} ({fix.applicability.value})"
    return {"description": {"text": text}, "artifactChanges": [change]}


def build_log(report: Report, rules: Mapping[str, Rule], cwd: Path) -> dict[str, Any]:
    sources = SourceCache(cwd, report.source_files)
    codes = sorted({f.rule for f in report.findings})
    index = {code: i for i, code in enumerate(codes)}
    first = {f.rule: f for f in reversed(report.findings)}  # for codes missing from `rules`
    descriptors = [
        rule_descriptor(rules[code]) if code in rules else fallback_descriptor(first[code])
        for code in codes
    ]

    seen: dict[tuple[str, str, str], int] = {}
    results = []
    for f in report.findings:
        text = sources.line(f.path, f.line)
        key = (f.rule, f.path, text.strip() if text is not None else f"line:{f.line}")
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": artifact_uri(f.path), "uriBaseId": SRCROOT},
                        "region": region(f),
                    }
                }
            ],
            "partialFingerprints": {"primaryLocationLineHash": fingerprint(*key, occurrence)},
        }
        if f.evidence:
            result["properties"] = {"evidence": f.evidence}
        if f.autofix is not None and f.autofix.edits:
            result["fixes"] = [sarif_fix(f.path, f.autofix)]
        results.append(result)

    notifications = [{"level": "error", "message": {"text": e}} for e in report.errors]
    notifications += [
        {"level": "warning", "message": {"text": w}}
        for w in [*report.warnings, *filter(None, [report.interrupted])]
    ]
    notifications += [{"level": "note", "message": {"text": n}} for n in report.notes]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "patchaudit",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": descriptors,
                    }
                },
                "originalUriBaseIds": {SRCROOT: {"uri": base_uri(cwd)}},
                # Finding.column counts characters, not SARIF's default UTF-16 code units.
                "columnKind": "unicodeCodePoints",
                "invocations": [
                    {
                        "executionSuccessful": not report.errors,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": results,
            }
        ],
    }


class SarifReporter:
    def __init__(self, stream: TextIO, *, rules: Mapping[str, Rule], cwd: Path) -> None:
        self.stream = stream
        self.rules = rules
        self.cwd = cwd

    def report(self, report: Report) -> None:
        write_text(self.stream, dumps(build_log(report, self.rules, self.cwd)))
