"""Results of a sweep: the rich table, the JSON document and the post's figure."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from ._locust import PERCENTILE_NOTE
from .limits import raise_nofile, sysctls
from .stats import (
    CLIENT_BOUND,
    LATE_FLOOR_NS,
    LATE_SHARE,
    SATURATED_BELOW,
    RunResult,
    format_rate,
)

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
    notes = [run.error.splitlines()[0]] if run.error else []
    if run.saturated:
        notes.append(
            f"saturated: {run.achieved_rate or 0:,.0f} of {format_rate(run.target_rate or 0)} req/s"
            + (f", {run.late_sends:,} sent late" if run.late_sends else "")
        )
    if run.client_cpu is not None and run.client_cpu.bound:
        notes.append("the client was the bottleneck (CPU-bound)")
    return "; ".join(([kinds] if kinds else []) + notes)


def cpu_cell(run: RunResult) -> str:
    """The client's CPU as a share of the cores its processes could use."""
    if run.client_cpu is None:
        return "-"
    cpu = run.client_cpu
    share = cpu.total / cpu.limit if cpu.limit else 0.0
    return f"[red]{share:.0%}[/]" if cpu.bound else f"{share:.0%}"


def describe_connections(keep_alive: bool) -> str:
    return (
        "keep-alive on (connections reused)"
        if keep_alive
        else "keep-alive off (a new connection per request, like ab without -k)"
    )


def render_table(runs: list[RunResult], console) -> None:
    from rich.table import Table

    keep_alive = {run.keep_alive for run in runs}
    both = len(keep_alive) > 1
    is_open = any(run.model == "open" for run in runs)
    title = "; ".join(describe_connections(k) for k in sorted(keep_alive)) or "no runs"
    if is_open:
        title += "; open model: a fixed schedule, latency from each intended send time"
    bound = [run for run in runs if run.client_cpu is not None and run.client_cpu.bound]
    caption = (
        f"client CPU: share of the cores the load processes could use. Above "
        f"{CLIENT_BOUND:.0%} (red) the client, not the server, was the bottleneck: "
        f"{len(bound)} run(s) here."
        if bound
        else None
    )
    if is_open:
        caption = (caption + " " if caption else "") + (
            "Open model: concurrency caps the connections in flight; svc p99 is from the "
            f"actual send. Saturated: under {SATURATED_BELOW:.0%} of the target rate "
            f"completed, or over {LATE_SHARE:.0%} of the requests were sent late (behind "
            f"schedule by more than one interval and {LATE_FLOOR_NS // 1_000_000} ms)."
        )
    if any(run.engine == "builtin" for run in runs):  # locust's geventhttpclient does not
        title += "; the built-in client's sockets use TCP_NODELAY"
    table = Table(title=f"patchaudit bench: {title}", caption=caption)
    columns = [("server", "left"), ("engine", "left")]
    columns += [("keep-alive", "left")] if both else []
    columns += [("concurrency", "right")]
    columns += [("target/s", "right")] if is_open else []
    columns += [("req/s", "right"), ("p50 ms", "right"), ("p99 ms", "right")]
    columns += [("svc p99 ms", "right")] if is_open else []
    columns += [("client CPU", "right"), ("failed / total", "right"), ("errors", "left")]
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for run in runs:
        failed_style = "red" if run.failed or run.error else ""
        service = run.service_ms or {}
        cells = [f"{run.server} ({run.mode})", run.engine]
        cells += [("on" if run.keep_alive else "off")] if both else []
        cells += [f"{run.concurrency:,}"]
        cells += [format_rate(run.target_rate) if run.target_rate else "-"] if is_open else []
        cells += [f"{run.rps:,.0f}", _ms(run.latency_ms.get("p50")), _ms(run.latency_ms.get("p99"))]
        cells += [_ms(service.get("p99"))] if is_open else []
        cells += [
            cpu_cell(run),
            f"[{failed_style}]{run.failed:,}[/] / {run.requests:,}"
            if failed_style
            else f"{run.failed:,} / {run.requests:,}",
            error_kinds(run),
        ]
        table.add_row(*cells)
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
    """Redraw the post's figure: req/s and failed requests against concurrency, or against the
    target rate for an open-model sweep (``--rate``), whose points are the rates."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(PLOT_MISSING) from None
    engines = {run.engine for run in runs}
    keep_alive = {run.keep_alive for run in runs}
    open_model = any(run.model == "open" for run in runs)

    def x_of(run: RunResult) -> float:
        return (run.target_rate or 0.0) if open_model else run.concurrency

    series: dict[str, list[RunResult]] = {}
    for run in runs:
        label = run.server + (f" ({run.engine})" if len(engines) > 1 else "")
        if len(keep_alive) > 1:  # --keep-alive both: one line per mode
            label += ", keep-alive" if run.keep_alive else ", new connections"
        series.setdefault(label, []).append(run)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 7))
    for label, points in series.items():
        points = sorted(points, key=x_of)
        xs = [x_of(p) for p in points]
        top.plot(xs, [p.rps for p in points], marker="o", label=label)
        bottom.plot(xs, [p.failed for p in points], marker="o", label=label)
    top.set_ylabel("requests per second")
    bottom.set_ylabel("failed requests")
    requests = max((r.requests for r in runs), default=0)
    if open_model:
        cap = max(r.concurrency for r in runs)
        bottom.set_xlabel(f"target requests per second (open model, at most {cap:,} in flight)")
    else:
        bottom.set_xlabel(f"concurrent connections (of {requests:,} requests per run)")
    ticks = sorted({x_of(run) for run in runs})
    for axes in (top, bottom):
        axes.set_xscale("log")
        axes.set_xticks(ticks, [f"{tick:,.0f}" for tick in ticks])
        axes.minorticks_off()
        axes.grid(True, alpha=0.3)
        axes.set_ylim(bottom=0)
        axes.legend()
    connections = {
        frozenset({True}): "keep-alive on",
        frozenset({False}): "new connection per request",
    }.get(frozenset(keep_alive), "keep-alive on and off")
    clients = ", ".join(sorted(engines))
    top.set_title(title or f"{len(os.sched_getaffinity(0))} cores, {connections}, {clients} client")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
