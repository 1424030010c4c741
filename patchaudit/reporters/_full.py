"""``full``: the human format. Findings grouped by file with a source snippet, then a summary.

Everything is rendered into a buffer by rich and written to the stream at the end, so the
stream's encoding problems are handled in one place and rich never probes the real stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._console import terminal_width
from .._findings import Finding, Report, Severity
from ..rules._model import Rule
from ._common import (
    SourceCache,
    buffered_console,
    fixable_line,
    hanging,
    isatty,
    printable,
    summary_line,
    table_fits,
    write_text,
)

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "bold cyan"}
_TAB = 4
_CONTEXT = 1  # lines shown above and below the flagged line
_WIDTH = 100  # used whenever the stream is not a terminal, so output is reproducible


def _display(text: str) -> str:
    # Tabs are expanded here rather than by rich so the caret column can be computed exactly.
    return printable(text).expandtabs(_TAB)


def format_evidence(evidence: Mapping[str, Any]) -> list[str]:
    """``import_chain`` reads as ``a -> b -> c``; other keys as ``key: value``."""
    lines = []
    for key, value in evidence.items():
        if key == "import_chain" and isinstance(value, (list, tuple)):
            lines.append("import chain: " + " -> ".join(str(v) for v in value))
        elif isinstance(value, (list, tuple, set, frozenset)):
            lines.append(f"{key}: " + ", ".join(str(v) for v in value))
        else:
            lines.append(f"{key}: {value}")
    return [printable(line) for line in lines]


class FullReporter:
    def __init__(
        self, stream: TextIO, *, color: bool, rules: Mapping[str, Rule], cwd: Path
    ) -> None:
        self.stream = stream
        self.color = color
        self.rules = rules
        self.cwd = cwd
        self.sources = SourceCache(cwd)
        self.roles: dict[Any, Any] = {}

    def report(self, report: Report) -> None:
        self.sources = SourceCache(self.cwd, report.source_files)
        self.roles = {p.get("pid"): p.get("role") for p in report.processes}
        self.wrap = isatty(self.stream)
        width = terminal_width(self.stream, _WIDTH)
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        console, buffer = buffered_console(
            color=self.color, width=width, encoding=encoding, wrap=self.wrap
        )
        if report.timeline is not None:
            render_timeline(console, report.timeline)
        by_file: dict[str, list[Finding]] = {}
        for f in report.findings:
            by_file.setdefault(f.path, []).append(f)
        for path, findings in by_file.items():
            console.print(Text(printable(path), style="bold underline"))
            for f in findings:
                self._finding(console, f)
        if report.errors:
            console.print(Text("Could not analyse:", style="bold"))
            for error in report.errors:
                console.print(Text.assemble(("  error: ", "bold red"), printable(error)))
            console.print()
        for note in report.notes:
            console.print(Text.assemble(("note: ", "bold"), printable(note)), style="dim")
        if report.findings:
            # The rule names go first when the terminal is too narrow for whole words.
            table = self._table(report, names=True)
            table = table if table_fits(console, table) else self._table(report, names=False)
            console.print(table, soft_wrap=False)  # laid out at the width, even in a pipe
        console.print(Text(summary_line(report), style="bold"))
        fixes = fixable_line(report)
        if fixes is not None:
            console.print(Text(fixes))
        write_text(self.stream, buffer.getvalue())

    def _finding(self, console: Console, f: Finding) -> None:
        rule = self.rules.get(f.rule)
        style = _STYLE[f.severity]
        head = Text.assemble((f"{f.severity.value}[{printable(f.rule)}]", style))
        if f.fix_applies():
            head.append(" [*]", style="bold")
        if rule is not None:
            head.append(f" {rule.name}", style="bold")
        head.append(f": {printable(f.message)}")
        console.print(head)
        where = f"  --> {printable(f.path)}:{f.line}:{f.column}"
        if f.process is not None:  # `run`: the process of the command it was seen in
            where += f" (in {self.roles.get(f.process, 'process')} {f.process})"
        console.print(Text(where, style="dim"))
        for line in self._snippet(f):  # source is cropped on a terminal, never wrapped
            console.print(line, no_wrap=True, overflow="ellipsis" if self.wrap else "ignore")
        notes: list[tuple[str, str]] = []
        for i, fix_line in enumerate((f.fix or (rule.fix if rule else "")).splitlines()):
            notes.append(("fix" if i == 0 else "", printable(fix_line)))
        if rule is not None:
            notes.append(("see", ", ".join([*rule.failure_modes, rule.docs_path])))
        notes += [("evidence", line) for line in format_evidence(f.evidence)]
        for label, value in notes:
            prefix = f"   = {label}: " if label else " " * (len("   = fix: "))
            hanging(console, prefix, value)
        console.print()

    def _snippet(self, f: Finding) -> list[Text]:
        lines = self.sources.lines(f.path)
        if lines is None or not 1 <= f.line <= len(lines):
            return []  # unreadable or changed since analysis: the location line is enough
        first, last = max(1, f.line - _CONTEXT), min(len(lines), f.line + _CONTEXT)
        gutter = len(str(last))
        bar = Text(f" {' ' * gutter} |", style="blue")
        out = [bar.copy()]
        for n in range(first, last + 1):
            source = (_display(lines[n - 1]), "bold" if n == f.line else "")
            out.append(Text.assemble((f" {n:>{gutter}} | ", "blue"), source))
            if n == f.line:
                out.append(self._caret(f, lines[n - 1], gutter))
        out.append(bar.copy())
        return out

    def _caret(self, f: Finding, source: str, gutter: int) -> Text:
        start = min(max(f.column, 1), len(source) + 1)
        end_line, end_column = f.end_line, f.end_column
        if end_column is None and end_line is None:
            end_line, end_column = self.sources.span(f.path, f.line, f.column) or (None, None)
        if end_column is not None and end_line in (None, f.line) and end_column > start:
            end = min(end_column, len(source) + 1)
        elif end_line is not None and end_line > f.line:
            end = len(source.rstrip()) + 1  # multi-line range: underline to the end of this line
        else:
            end = start + 1
        pad = cell_len(_display(source[: start - 1]))
        width = max(1, cell_len(_display(source[: end - 1])) - pad)
        return Text.assemble(
            (f" {' ' * gutter} | ", "blue"), " " * pad, ("^" * width, _STYLE[f.severity])
        )

    def _table(self, report: Report, *, names: bool) -> Table:
        severities = list(Severity)
        per_rule: dict[str, dict[Severity, int]] = {}
        for f in report.findings:
            counts = per_rule.setdefault(f.rule, dict.fromkeys(severities, 0))
            counts[f.severity] += 1
        totals = report.summary()
        table = Table(title=None, show_footer=True, show_edge=False, pad_edge=False)
        table.add_column("Rule", footer="Total", no_wrap=True)
        if names:
            table.add_column("Name")
        for sev in severities:
            header = Text(sev.value, style=_STYLE[sev])
            table.add_column(header, footer=str(totals[sev.value]), justify="right")
        table.add_column("Count", footer=str(len(report.findings)), justify="right")
        for code in sorted(per_rule):
            counts = per_rule[code]
            rule = self.rules.get(code)
            name = [rule.name if rule else ""] if names else []
            table.add_row(
                printable(code),
                *name,
                *(str(counts[sev]) for sev in severities),
                str(sum(counts.values())),
            )
        return table


def render_timeline(console: Console, timeline: Mapping[str, Any]) -> None:
    """The runtime audit's opening section: how the app was loaded and when it was patched
    (under `run`, for each process of the command)."""

    def line(label: str, text: str, style: str = "bold") -> None:
        hanging(console, f"  {label}: ", printable(text), style)

    console.print(Text("Patch timeline", style="bold underline"))
    line("mode", f"{timeline.get('mode')} ({timeline.get('mode_reason')})")
    line("interpreter", f"{timeline.get('python')}, gevent {timeline.get('gevent') or 'missing'}")
    processes = timeline.get("processes")
    if processes is None:
        _patch_lines(console, line, timeline)
    for process in processes or []:
        argv = " ".join(str(a) for a in process.get("argv") or [])
        line(f"{process.get('role')} (pid {process.get('pid')})", argv)
        _patch_lines(console, lambda label, *rest: line(f"  {label}", *rest), process)
    for run in timeline.get("requests") or []:
        statuses = ", ".join(f"{code} x{n}" for code, n in (run.get("statuses") or {}).items())
        single, wall = float(run.get("single") or 0), float(run.get("wall") or 0)
        line(
            "requests",
            f"{run.get('path')}: one alone {single:.3f}s, all together {wall:.3f}s; "
            f"{statuses or 'no responses'}",
        )
    for block in timeline.get("startup_blocking") or []:
        text = f"{block.get('at')} in {block.get('function')} held the hub {block.get('seconds')}s"
        line("start-up", f"{text} during {block.get('phase')} (before any request)")
    for error in timeline.get("app_errors") or []:
        text = f"{error.get('path')}: {error.get('type')}: {error.get('message')}"
        line("app error", text, "bold red")
    output = timeline.get("app_output") or {}
    for stream in ("stdout", "stderr"):
        info = output.get(stream) or {}
        if info.get("bytes"):
            last = (info.get("tail") or info.get("head") or [""])[-1]
            line(f"app {stream}", f"{info['bytes']} bytes, {info.get('lines')} lines; last: {last}")
    console.print()


def _patch_lines(console: Console, line: Callable[..., None], timeline: Mapping[str, Any]) -> None:
    """What was loaded before the patch, and the patch calls, of one process."""
    early = timeline.get("patched_modules_loaded_before_patch") or []
    loaded = timeline.get("loaded_before_patch", 0)
    line("before patching", f"{loaded} modules loaded, {len(early)} that gevent patches")
    for item in early[:12]:
        chain = " -> ".join(item.get("chain") or [])
        console.print(Text(printable(f"    {item.get('module'):<12} {chain}")))
    for step in timeline.get("gunicorn") or []:
        when = "after" if step.get("after_patch") else "before"
        calls = "; called " + ", ".join(step["calls"]) if step.get("calls") else ""
        where = f"{step.get('step')} ({step.get('process')}) at {step.get('location')}"
        line("gunicorn", f"{where}, {when} the patch{calls}")
    patches = timeline.get("patches") or []
    if not patches:
        line("patched", "never", "bold red")
    for patch in patches:
        args = ", ".join(f"{k}={v}" for k, v in (patch.get("arguments") or {}).items())
        thread = "main thread" if patch.get("main_thread") is not False else "NOT the main thread"
        alive = len(patch.get("threads") or [])
        call = f"{patch.get('framework')} {patch.get('function')}({args})"
        line("patched", f"{call} at {patch.get('location')} on the {thread}, {alive} thread(s)")
    replaced = timeline.get("replaced") or {}
    if replaced:
        line("replaced", ", ".join(f"{m} ({len(n)})" for m, n in sorted(replaced.items())))
