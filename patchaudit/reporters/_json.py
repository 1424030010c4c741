"""``json``: a versioned document for scripts. Version 1's shape may be extended, never changed."""

from __future__ import annotations

import json
from typing import Any, TextIO

from .._findings import Report
from .._version import __version__
from ._common import json_safe, write_text

SCHEMA_VERSION = 1


def build_document(report: Report) -> dict[str, Any]:
    document = {
        "version": SCHEMA_VERSION,
        "tool": {"name": "patchaudit", "version": __version__},
        "target": report.target,
        "findings": [f.to_json() for f in report.findings],
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


def dumps(document: Any) -> str:
    """Serialise so that it never fails and any strict parser accepts the result.

    Lone surrogates become U+FFFD (JSON with unpaired ``\\udcxx`` escapes is rejected by many
    parsers) and ``ensure_ascii`` keeps the output independent of the stream's encoding.
    ``default=str`` covers evidence values that are not JSON types (paths, enums...).
    """
    return json.dumps(json_safe(document), indent=2, ensure_ascii=True, default=str) + "\n"


class JsonReporter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def report(self, report: Report) -> None:
        write_text(self.stream, dumps(build_document(report)))
