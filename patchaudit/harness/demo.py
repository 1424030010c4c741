"""`patchaudit demo`: what each mistake costs, the broken app next to its fixed twin.

Each shape in ``demo_apps/<shape>/{bad,fixed}`` (package data next to this module, so it
works from an installed wheel too) is served the way the runtime audit serves
an app (the same probe: gevent's pywsgi on 127.0.0.1, real client threads, gevent's monitor
thread), under the same bounded load, and the table shows requests per second, p99 latency,
errors and hub blocks for both, plus the runtime findings that explain the difference.

SIGINT and SIGTERM stop it in order: the app being served is killed, the apps that finished are
shown, and it exits 130 or 143; a second signal kills every child and exits at once. Its
temporary files live in one folder that is removed however it ends.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._console import (
    EXIT_OK,
    StatusLine,
    UsageError,
    add_no_color_option,
    terminal_width,
    use_color,
)
from .._process import Interrupted, interruptible, kill_all
from ._children import scratch_folder

if TYPE_CHECKING:
    from ..runtime._launcher import ProbeRun

SHAPES = {
    "stale-sleep": "`from time import sleep` bound before patching (MPA251)",
    "cpu-bound": "CPU-bound work inside the handler (MPA851)",
    "c-driver": "a wait inside C, like psycopg2 without psycogreen (MPA852)",
    "thread-false-lock": "`patch_all(thread=False)` and a lock held across a yield (MPA311)",
    "eventlet-after-gevent": "eventlet patched after gevent (MPA451)",
}


@dataclass
class DemoRun:
    shape: str
    variant: str
    requests: int
    completed: int = 0
    errors: int = 0
    rps: float = 0.0
    p99_ms: float | None = None
    hub_blocks: int = 0
    findings: list[str] = field(default_factory=list)
    problem: str | None = None  # why the app did not serve at all

    def to_json(self) -> dict:
        return dict(self.__dict__)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--apps",
        type=Path,
        help="folder of demo apps (default: the ones installed with patchaudit)",
    )
    parser.add_argument("--shapes", help=f"comma-separated subset of: {', '.join(SHAPES)}")
    parser.add_argument("-n", "--requests", type=int, default=60, help="requests per app (60)")
    parser.add_argument("-c", "--concurrency", type=int, default=10, help="parallel requests (10)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per app before it is killed (10)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_no_color_option(parser)


def run_demo(args: argparse.Namespace) -> int:
    apps = _apps_folder(args.apps)
    shapes = [s.strip() for s in args.shapes.split(",")] if args.shapes else list(SHAPES)
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise UsageError(f"unknown demo shape {unknown[0]!r} (choose from {', '.join(SHAPES)})")
    if args.requests < 1 or args.concurrency < 1 or args.timeout <= 0:
        raise UsageError("--requests, --concurrency and --timeout must be positive")
    runs: list[DemoRun] = []
    started = time.monotonic()
    interrupted: Interrupted | None = None
    # no delay: every demo takes longer than the usual two seconds, from its first app
    status = StatusLine(delay=0)
    total = 2 * len(shapes)
    with interruptible():
        try:
            with scratch_folder("demo"):
                for shape in shapes:
                    for variant in ("bad", "fixed"):
                        status.update(
                            f"patchaudit demo: serving {shape} ({variant}), "
                            f"app {len(runs) + 1} of {total}"
                        )
                        runs.append(serve_once(apps / shape / variant, shape, variant, args))
        except Interrupted as exc:
            interrupted = exc
            status.close()
            print(f"patchaudit: {exc}; showing what finished", file=sys.stderr)
        finally:
            status.close()
            kill_all()  # the probe of the app being served, if an exception cut its cleanup
        elapsed = time.monotonic() - started
        if args.format == "json":
            document = {
                "version": 1,
                "duration_s": round(elapsed, 1),
                "interrupted": interrupted is not None,
                "runs": [r.to_json() for r in runs],
            }
            json.dump(document, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            _table(runs, elapsed, color=use_color(sys.stdout, args.no_color))
    return EXIT_OK if interrupted is None else interrupted.exit_code


DEMO_APPS = Path(__file__).resolve().parent / "demo_apps"


def _apps_folder(given: Path | None) -> Path:
    folder = given or DEMO_APPS
    if (folder / "stale-sleep").is_dir():
        return folder.resolve()
    if given is None:  # an install that left out the package data
        raise UsageError(f"demo apps not found in {folder}; reinstall patchaudit")
    raise UsageError(
        f"demo apps not found in {folder}; pass --apps a folder with <shape>/bad and "
        "<shape>/fixed, or leave --apps out to use the ones installed with patchaudit"
    )


def serve_once(app_dir: Path, shape: str, variant: str, args: argparse.Namespace) -> DemoRun:
    """Serve one app with the runtime probe and summarise what the load saw."""
    from ..runtime._launcher import run_probe

    run_result = DemoRun(shape, variant, args.requests)
    with tempfile.TemporaryDirectory(prefix=f"{shape}-{variant}-") as tmp:
        # served from a copy: files under site-packages never count as the app's own code
        # (the installed demo would explain nothing), and the install may be read-only
        app_dir = Path(shutil.copytree(app_dir, Path(tmp) / "app"))
        spec = {
            "target": {
                "kind": "module",
                "module": "app",
                "file": str(app_dir / "app.py"),
                "callable": "application",
                "factory": False,
            },
            "mode": "as-is",
            "chdir": str(app_dir),
            "pythonpath": [],
            "events_path": str(Path(tmp) / "events.jsonl"),
            "app_roots": [str(app_dir)],
            "serve": {
                "paths": ["/"],
                "requests": args.requests,
                "concurrency": args.concurrency,
                # a low threshold: the demo wants to count every stall a user would feel
                "max_blocking": 0.02,
                "request_timeout": min(5.0, args.timeout / 4),
            },
        }
        probe = run_probe(spec, python=sys.executable, timeout=args.timeout, workdir=Path(tmp))
        # while the copy exists: a frame counts as the app's only if its file is there
        _summarise(run_result, probe, app_dir, args)
    return run_result


def _summarise(
    run_result: DemoRun, probe: ProbeRun, app_dir: Path, args: argparse.Namespace
) -> None:
    """What the served run showed: throughput, latency, hub blocks and runtime findings."""
    from ..model.facts import RuntimeContext
    from ..runtime._audit import runtime_findings

    # no baseline run, and no modules counted as patched: the demo's findings are the ones the
    # served run shows by itself (stale bindings, hub blocks), not the loaded-before-patch list
    ctx = RuntimeContext.observe(
        probe.events,
        app_roots=[app_dir],
        cwd=app_dir,
        mode="as-is",
        max_blocking=0.02,
        concurrency=args.concurrency,
        patched_modules=frozenset(),
    )
    facts = ctx.facts
    serve = facts.first("serve")
    error = facts.first("error")
    if probe.timed_out and serve is None:
        run_result.problem = f"froze: no response until it was killed after {args.timeout:.0f} s"
    elif serve is None or serve.get("skipped"):
        reason = (error or {}).get("message") or (serve or {}).get("skipped") or "did not serve"
        run_result.problem = f"{(error or {}).get('type', 'no server')}: {reason}"
    else:
        latencies = [x for x in serve.get("latencies") or [] if x is not None]
        run_result.completed = len(latencies)
        run_result.errors = args.requests - len(latencies)
        wall = float(serve.get("wall") or 0)
        run_result.rps = len(latencies) / wall if wall else 0.0
        if latencies:
            ordered = sorted(latencies)
            run_result.p99_ms = (
                ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] * 1000
            )
    run_result.hub_blocks = sum(1 for b in facts.all("block") if b.get("phase") == "serve")
    run_result.findings = sorted({f.rule for f in runtime_findings(ctx)})


def _table(runs: list[DemoRun], elapsed: float, *, color: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    width = terminal_width(sys.stdout, 110)
    console = Console(no_color=not color, force_terminal=color, highlight=False, width=width)
    table = Table(title="patchaudit demo: the broken app next to its fix, same load")
    for column in ("shape", "variant", "req/s", "p99 ms", "errors", "hub blocks", "findings"):
        table.add_column(
            column,
            justify="right" if column in ("req/s", "p99 ms", "errors", "hub blocks") else "left",
        )
    for run in runs:
        if run.problem:
            table.add_row(
                run.shape,
                run.variant,
                "-",
                "-",
                f"{run.requests}/{run.requests}",
                "-",
                run.problem[:70],
            )
            continue
        p99 = f"{run.p99_ms:.0f}" if run.p99_ms is not None else "-"
        table.add_row(
            run.shape,
            run.variant,
            f"{run.rps:.0f}",
            p99,
            f"{run.errors}/{run.requests}",
            str(run.hub_blocks),
            ", ".join(run.findings) or "-",
        )
    console.print(table)
    for shape in dict.fromkeys(r.shape for r in runs):
        console.print(f"  {shape}: {SHAPES[shape]}")
    console.print(
        f"  ({elapsed:.0f} s; each app served on 127.0.0.1 by gevent's pywsgi, "
        "requests from real threads, new connection per request)"
    )
