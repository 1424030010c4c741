"""Results of a sweep: the rich table, the JSON document and the post's figure."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from ._locust import PERCENTILE_NOTE
from .limits import raise_nofile, sysctls
from .stats import RunResult

SCHEMA_VERSION = 1
PLOT_SUFFIXES = (".png", ".svg")
PLOT_MISSING = (
    "--plot needs matplotlib, which is not installed: "
    "`pip install matplotlib` (into the environment that runs patchaudit)"
)


class PlotUnavailable(Exception):
    """matplotlib is missing; the message is the one line to show."""


def machine_info() -> dict:
    soft, hard = raise_nofile()
    versions = {}
    for name in ("gevent", "eventlet", "paste", "gunicorn", "greenlet", "locust"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "versions": versions,
        "nofile": {"soft": soft, "hard": hard},
        "sysctl": sysctls(),
    }


def to_document(runs: list[RunResult], machine: dict | None = None) -> dict:
    document = {
        "version": SCHEMA_VERSION,
        "machine": machine if machine is not None else machine_info(),
        "runs": [run.to_json() for run in runs],
    }
    if any(run.engine == "locust" for run in runs):  # its latencies are not exact: say how
        document["notes"] = {"locust": PERCENTILE_NOTE}
    return document


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def error_kinds(run: RunResult) -> str:
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in run.errors.items() if count)
    if run.error:
        note = run.error.splitlines()[0]
        kinds = f"{kinds}; {note}" if kinds else note
    return kinds


def describe_connections(keep_alive: bool) -> str:
    return (
        "keep-alive on (connections reused)"
        if keep_alive
        else "keep-alive off (a new connection per request, like ab without -k)"
    )


def render_table(runs: list[RunResult], console) -> None:
    from rich.table import Table

    keep_alive = {run.keep_alive for run in runs}
    title = "; ".join(describe_connections(k) for k in sorted(keep_alive)) or "no runs"
    table = Table(title=f"patchaudit bench: {title}; client sockets use TCP_NODELAY")
    for name, justify in (
        ("server", "left"),
        ("engine", "left"),
        ("concurrency", "right"),
        ("req/s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("failed / total", "right"),
        ("errors", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    for run in runs:
        failed_style = "red" if run.failed or run.error else ""
        table.add_row(
            f"{run.server} ({run.mode})",
            run.engine + (" -k" if run.keep_alive and len(keep_alive) > 1 else ""),
            f"{run.concurrency:,}",
            f"{run.rps:,.0f}",
            _ms(run.latency_ms.get("p50")),
            _ms(run.latency_ms.get("p99")),
            f"[{failed_style}]{run.failed:,}[/] / {run.requests:,}"
            if failed_style
            else f"{run.failed:,} / {run.requests:,}",
            error_kinds(run),
        )
    console.print(table)


def check_plot_path(path: Path) -> str | None:
    """One line saying what is wrong with ``--plot PATH`` (before minutes of measuring)."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        return f"--plot {path}: the file name must end in .png or .svg"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return PLOT_MISSING
    return None


def plot(runs: list[RunResult], path: Path, title: str | None = None) -> None:
    """Redraw the post's figure: req/s and failed requests against concurrency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(PLOT_MISSING) from None
    engines = {run.engine for run in runs}
    series: dict[str, list[RunResult]] = {}
    for run in runs:
        label = run.server + (f" ({run.engine})" if len(engines) > 1 else "")
        series.setdefault(label, []).append(run)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 7))
    for label, points in series.items():
        points = sorted(points, key=lambda r: r.concurrency)
        xs = [p.concurrency for p in points]
        top.plot(xs, [p.rps for p in points], marker="o", label=label)
        bottom.plot(xs, [p.failed for p in points], marker="o", label=label)
    top.set_ylabel("requests per second")
    bottom.set_ylabel("failed requests")
    requests = max((r.requests for r in runs), default=0)
    bottom.set_xlabel(f"concurrent connections (of {requests:,} requests per run)")
    ticks = sorted({run.concurrency for run in runs})
    for axes in (top, bottom):
        axes.set_xscale("log")
        axes.set_xticks(ticks, [f"{tick:,}" for tick in ticks])
        axes.minorticks_off()
        axes.grid(True, alpha=0.3)
        axes.set_ylim(bottom=0)
        axes.legend()
    keep_alive = {run.keep_alive for run in runs}
    connections = "keep-alive on" if keep_alive == {True} else "new connection per request"
    clients = ", ".join(sorted(engines))
    top.set_title(title or f"{len(os.sched_getaffinity(0))} cores, {connections}, {clients} client")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
