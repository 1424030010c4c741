"""Rendering the doctor's results: JSON, and the terminal table with why and how to fix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._model import FAIL, INFO, JSON_VERSION, NA, OK, STATUSES, WARN, CheckResult, machine_info

# --- output ----------------------------------------------------------------------------------


def render_json(
    results: Sequence[CheckResult],
    *,
    concurrency: int,
    backlog: int,
    rate: float | None,
    machine: dict[str, Any] | None = None,
) -> str:
    document = {
        "version": JSON_VERSION,
        "machine": machine if machine is not None else machine_info(),
        "concurrency": concurrency,
        "backlog": backlog,
        "rate": rate,
        "checks": [r.as_dict() for r in results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


_STYLES = {OK: "green", WARN: "yellow", FAIL: "bold red", INFO: "cyan", NA: "dim"}


def render_table(
    results: Sequence[CheckResult],
    *,
    concurrency: int,
    backlog: int,
    rate: float | None,
    color: bool,
    width: int = 100,
    wrap: bool = True,
    machine: dict[str, Any] | None = None,
) -> str:
    """The terminal report: a table of statuses and values, then why and how to change each.
    ``wrap=False`` (not a terminal) leaves the prose unwrapped; the table is ``width`` wide."""
    from rich.text import Text

    from ..reporters._common import buffered_console, table_fits

    console, buffer = buffered_console(color=color, width=width, wrap=wrap)
    info = machine if machine is not None else machine_info()
    plan = f"{concurrency:,} connections, listen backlog {backlog:,}"
    plan += f", {rate:,.0f} new connections/s" if rate is not None else ""
    console.print(Text(f"patchaudit doctor: {info['kernel']}", style="bold"))
    console.print(f"{info['cores']} cores, {info['python']}; planned: {plan}")
    console.print()
    table = _layout(console, results, needed_column=True)
    if not table_fits(console, table, joints=("",)):  # too narrow: "needed" under the value
        table = _layout(console, results, needed_column=False)
        table_fits(console, table)
    console.print(table, soft_wrap=False)  # tables are laid out at the width, even in a pipe
    console.print()
    for r in results:
        line = Text(f"{r.status:<4} ", style=_STYLES.get(r.status, ""))
        line.append(r.id, style="bold")
        console.print(line)
        console.print(Text(r.why))
        for command in (r.fix or "").splitlines():  # never wrapped: they are copied and pasted
            line = Text("  $ " if not command.startswith("#") else "  ") + Text(command)
            console.print(line, soft_wrap=True)
        console.print()
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(
        Text(f"{summary}. doctor changed nothing; the commands above need root.", style="bold")
    )
    # rich pads wrapped lines; trailing blanks would only get in the way of copy and diff
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))


def _layout(console: Any, results: Sequence[CheckResult], *, needed_column: bool) -> Any:
    """The status table; rich sizes the columns from their words, so none is split while the
    terminal is wide enough (see ``table_fits``)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SQUARE, header_style="bold")
    table.add_column("status", no_wrap=True)
    # the setting names never wrap; the titles under them do
    table.add_column("setting", min_width=max(len(r.id) for r in results))
    table.add_column("value" if needed_column else "value (needed)")
    if needed_column:
        table.add_column("needed")
    for r in results:
        value = Text(r.value)
        if not needed_column and r.needed:
            value.append(f"\nneeded: {r.needed}", style="dim")
        table.add_row(
            Text(r.status, style=_STYLES.get(r.status, "")),
            Text(r.id, style="bold") + Text(f"\n{r.title}", style="dim"),
            value,
            *([r.needed or ""] if needed_column else []),
        )
    return table
