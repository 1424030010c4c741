"""``github``: GitHub Actions workflow commands, which become annotations on the PR diff.

Escaping follows the runner's ``escapeData``/``escapeProperty`` (actions/toolkit ``command.ts``).
"""

from __future__ import annotations

from typing import TextIO

from .._findings import Finding, Report, Severity
from ._common import write_text

_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_finding(f: Finding) -> str:
    props = [
        ("title", f"patchaudit ({f.rule})"),
        ("file", f.path),
        ("line", str(f.line)),
        ("col", str(f.column)),
    ]
    if f.end_line is not None:
        props.append(("endLine", str(f.end_line)))
    if f.end_column is not None:
        props.append(("endColumn", str(f.end_column)))
    joined = ",".join(f"{key}={escape_property(value)}" for key, value in props)
    data = f"{f.path}:{f.line}:{f.column}: {f.rule} {f.message}"
    return f"::{_LEVEL[f.severity]} {joined}::{escape_data(data)}"


class GithubReporter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def report(self, report: Report) -> None:
        lines = [format_finding(f) for f in report.findings]
        lines += [f"::error::{escape_data(error)}" for error in report.errors]
        notices = [*report.warnings, *filter(None, [report.interrupted])]
        lines += [f"::warning::{escape_data(text)}" for text in notices]
        if lines:
            write_text(self.stream, "\n".join(lines) + "\n")
