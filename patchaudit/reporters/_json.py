"""``json``: a versioned document for scripts. Version 1's shape may be extended, never changed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO

from .._findings import Report
from .._version import __version__
from ..rules._model import Rule
from ._common import json_safe, write_text

SCHEMA_VERSION = 1


def build_document(report: Report, rules: Mapping[str, Rule] | None = None) -> dict[str, Any]:
    document = {
        "version": SCHEMA_VERSION,
        "tool": {"name": "patchaudit", "version": __version__},
        "target": report.target,
        "findings": [_with_rule(f.to_json(), rules) for f in report.findings],
        "errors": list(report.errors),
        "summary": report.summary(),
    }
    if report.interrupted is not None:  # present only when the run was cut short
        document["interrupted"] = report.interrupted
    if report.programs:  # `check`: the programs found, each with its launcher and frameworks
        document["programs"] = report.programs
    if report.processes:  # `run`: the command's processes, which findings name by pid
        document["processes"] = report.processes
    if report.timeline is not None:  # the runtime audit's extension of version 1
        document["timeline"] = report.timeline
    return document


def _with_rule(finding: dict[str, Any], rules: Mapping[str, Rule] | None) -> dict[str, Any]:
    """The rule's name and docs page beside its code (null for a code the table lacks)."""
    if rules is None:
        from ..rules import REGISTRY as rules
    rule = rules.get(finding["rule"])
    finding["name"] = rule.name if rule is not None else None
    finding["url"] = rule.docs_url if rule is not None else None
    return finding


def dumps(document: Any) -> str:
    """Serialise so that it never fails and any strict parser accepts the result.

    Lone surrogates become U+FFFD (JSON with unpaired ``\\udcxx`` escapes is rejected by many
    parsers) and ``ensure_ascii`` keeps the output independent of the stream's encoding.
    ``default=str`` covers evidence values that are not JSON types (paths, enums...).
    """
    return json.dumps(json_safe(document), indent=2, ensure_ascii=True, default=str) + "\n"


class JsonReporter:
    def __init__(self, stream: TextIO, rules: Mapping[str, Rule] | None = None) -> None:
        self.stream = stream
        self.rules = rules

    def report(self, report: Report) -> None:
        write_text(self.stream, dumps(build_document(report, self.rules)))
