"""The test suite's own time: the README's command next to one worker per CPU, in one run.

Runs the whole suite (`pytest -q -p no:cacheprovider -n N tests`) in interleaved rounds at
``-n <CPUs>`` and at ``-n auto`` (one worker more, tests/conftest.py), and prints each run's wall
time, the CPU time of pytest and everything it waited for, and the ratio of the medians. The
target is the README's command under 5 minutes on 2 cores. It measures and does not gate: it
exits 0 whenever the suites ran, whatever they found.

Usage: python benchmarks/suite_time.py [--rounds 1] [--json FILE] [-- PYTEST-ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 300.0
#: a run of the whole suite is about 4 minutes; one that hangs is stopped
RUN_TIMEOUT_S = 1200


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(workers: str, extra: list[str]) -> dict:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers]
    argv += extra or ["tests"]
    cpu = _children_cpu()
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    wall = time.monotonic() - started
    lines = done.stdout.splitlines()
    summary = [ln for ln in lines if re.search(r"\d+ (passed|failed)", ln)]
    return {
        "workers": workers,
        "wall_s": round(wall, 1),
        "cpu_s": round(_children_cpu() - cpu, 1),
        "exit": done.returncode,
        "summary": summary[-1].strip("= ") if summary else done.stdout[-200:],
        "failed": [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))],
    }


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("--json", type=Path, help="also write the runs as JSON here")
    parser.add_argument("pytest_args", nargs="*", help="after --: what pytest runs (tests)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cpus = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    print(f"{cpus} CPUs, load average {load:.2f} before the first run", flush=True)
    runs: list[dict] = []
    choices = (str(cpus), "auto")
    for round_ in range(1, args.rounds + 1):
        for workers in choices:
            print(f"round {round_}: pytest -n {workers} ...", flush=True)
            run = _run(workers, args.pytest_args)
            runs.append(run)
            print(
                f"  wall {_minutes(run['wall_s'])}, CPU {run['cpu_s']:.0f} s, "
                f"exit {run['exit']}: {run['summary']}",
                flush=True,
            )
            for line in run["failed"]:
                print(f"    {line}", flush=True)
    walls = {w: statistics.median(r["wall_s"] for r in runs if r["workers"] == w) for w in choices}
    ratio = walls["auto"] / walls[str(cpus)]
    if args.pytest_args:  # the target is the whole suite's
        verdict = "a part of the suite, no target"
    else:
        passed = walls["auto"] < TARGET_S
        verdict = f"target under {_minutes(TARGET_S)}: {'PASS' if passed else 'FAIL'}"
    print(
        f"median wall: -n {cpus} {_minutes(walls[str(cpus)])}, -n auto "
        f"{_minutes(walls['auto'])} ({ratio:.2f}x); {verdict}"
    )
    if args.json:
        args.json.write_text(json.dumps({"cpus": cpus, "load": load, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
