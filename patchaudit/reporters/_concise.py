"""``concise``: one ``path:line:col: CODE message`` line per finding, as flake8 and ruff print
(``CODE [*] message`` when ``--fix`` would fix it)."""

from __future__ import annotations

from typing import TextIO

from .._findings import Report, Severity
from ._common import fixable_line, printable, summary_line, write_text

# Plain ANSI SGR codes: this format must stay cheap and byte-predictable, so no rich here.
_ANSI = {
    Severity.ERROR: "\x1b[1;31m",
    Severity.WARNING: "\x1b[1;33m",
    Severity.INFO: "\x1b[1;36m",
}
_RESET = "\x1b[0m"


class ConciseReporter:
    def __init__(self, stream: TextIO, *, color: bool) -> None:
        self.stream = stream
        self.color = color

    def _paint(self, text: str, severity: Severity) -> str:
        return f"{_ANSI[severity]}{text}{_RESET}" if self.color else text

    def report(self, report: Report) -> None:
        out: list[str] = []
        for f in report.findings:
            # printable() keeps every finding on exactly one line, whatever the message holds.
            code = self._paint(printable(f.rule), f.severity)
            fixable = "[*] " if f.fix_applies() else ""
            out.append(
                f"{printable(f.path)}:{f.line}:{f.column}: {code} {fixable}{printable(f.message)}"
            )
        for error in report.errors:
            out.append(f"{self._paint('error:', Severity.ERROR)} {printable(error)}")
        out.append(summary_line(report))
        fixes = fixable_line(report)
        if fixes is not None:
            out.append(fixes)
        write_text(self.stream, "\n".join(out) + "\n")
