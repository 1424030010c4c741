"""Live progress of `patchaudit bench` on stderr: a rich bar on a terminal, one line per run
elsewhere."""

from __future__ import annotations

import sys

from .servers import SERVER_MODES
from .stats import LiveStats, RunResult, format_rate
from .sweep import SweepOptions, SweepReporter

PROG = "patchaudit bench"


class ProgressReporter(SweepReporter):
    """Live progress on stderr: a rich bar on a terminal, one line per run elsewhere."""

    def __init__(self, console, options: SweepOptions) -> None:
        self.console = console
        self.options = options
        self.bar = None
        self.task = None
        self.total: int | None = None
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rps]:>8,.0f} req/s"),
                TextColumn("[red]{task.fields[failed]:,} failed"),
                TimeElapsedColumn(),
                console=console,
            )
            self.bar.start()

    def run_started(
        self,
        server: str,
        engine: str,
        concurrency: int,
        port: int,
        *,
        keep_alive: bool | None = None,
        rate: float | None = None,
    ) -> None:
        mode = SERVER_MODES[server]
        keep_alive = self.options.keep_alive if keep_alive is None else keep_alive
        line = (
            f"{PROG}: {server} ({mode}) on 127.0.0.1:{port}, c={concurrency:,}, "
            + (f"rate {format_rate(rate)}/s, " if rate is not None else "")
            + f"n={self.options.requests:,}, engine {engine}, "
            f"keep-alive {'on' if keep_alive else 'off'}"
        )
        if self.bar is not None:
            self.bar.console.print(line, highlight=False, markup=False)
            total = self.total = self.options.requests if engine == "builtin" else None
            self.task = self.bar.add_task(
                f"{server} c={concurrency:,} ({engine})", total=total, rps=0.0, failed=0
            )
        else:
            print(line, file=sys.stderr, flush=True)

    def progress(self, live: LiveStats) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=live.done, rps=live.rps, failed=live.failed)

    def run_finished(self, result: RunResult) -> None:
        if self.bar is not None and self.task is not None:
            done = result.completed + result.failed
            total = self.total  # None for ab/wrk: they report only at the end
            self.bar.update(
                self.task,
                completed=done,
                total=total if total is not None else max(done, 1),
                rps=result.rps,
                failed=result.failed,
            )
            self.task = None
        summary = (
            f"{PROG}: {result.server} c={result.concurrency:,}: {result.rps:,.0f} req/s, "
            f"{result.failed:,} failed of {result.requests:,}"
        )
        if result.error:
            summary += f" ({result.error.splitlines()[0]})"
        if self.bar is None:
            print(summary, file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
