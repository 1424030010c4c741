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
    machine: dict[str, Any] | None = None,
) -> str:
    """The terminal report: a table of statuses and values, then why and how to change each."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..reporters._common import buffered_console

    console, buffer = buffered_console(color=color, width=width)
    info = machine if machine is not None else machine_info()
    plan = f"{concurrency:,} connections, listen backlog {backlog:,}"
    plan += f", {rate:,.0f} new connections/s" if rate is not None else ""
    console.print(Text(f"patchaudit doctor: {info['kernel']}", style="bold"))
    console.print(f"{info['cores']} cores, {info['python']}; planned: {plan}")
    console.print()
    # Fixed widths: setting names never wrap mid-word while the terminal has room for them.
    status_w = max(len("status"), *(len(r.status) for r in results))
    setting_w = max(len(r.id) for r in results)
    rest = width - 13 - status_w - setting_w  # 5 borders and 2 x 4 padding
    table = Table(box=box.SQUARE, header_style="bold")
    table.add_column("status", no_wrap=True)
    if rest >= 40:
        table.add_column("setting", width=setting_w, overflow="fold")
        table.add_column("value", width=rest * 3 // 5, overflow="fold")
        table.add_column("needed", width=rest - rest * 3 // 5, overflow="fold")
    else:
        for name in ("setting", "value", "needed"):
            table.add_column(name, ratio=1, overflow="fold")
    for r in results:
        table.add_row(
            Text(r.status, style=_STYLES.get(r.status, "")),
            Text(r.id, style="bold") + Text(f"\n{r.title}", style="dim"),
            r.value,
            r.needed or "",
        )
    console.print(table)
    console.print()
    for r in results:
        line = Text(f"{r.status:<4} ", style=_STYLES.get(r.status, ""))
        line.append(r.id, style="bold")
        console.print(line)
        console.print(Text(r.why), soft_wrap=False)
        for command in (r.fix or "").splitlines():
            console.print(Text("  $ " if not command.startswith("#") else "  ") + Text(command))
        console.print()
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(
        Text(f"{summary}. doctor changed nothing; the commands above need root.", style="bold")
    )
    # rich pads wrapped lines; trailing blanks would only get in the way of copy and diff
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))
