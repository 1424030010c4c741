"""What `--gevent-audit` costs a test run, measured side by side in one run.

Suites, each run ``--rounds`` times without and with ``--gevent-audit``, interleaved and in
alternating order (a busy machine then slows both alike):

* ``patchaudit``: a representative, in-process part of this repository's own tests (about 300
  tests over the rule catalogue, configuration, discovery, reporters and rule fixtures; the
  rest mostly time subprocesses, which the audit does not enter);
* the real gevent projects of ``benchmarks/real_suite.py`` (gipc, geventhttpclient), installed
  into throwaway venvs on first use.

Reported: median wall time and median CPU time (the pytest process's user + system, less
sensitive to other load on the machine), and the overhead of the audit. Target: at most 10 %.

Usage: python benchmarks/pytest_overhead.py [--rounds 7] [--suite NAME ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_suite  # noqa: E402  (the sibling benchmark, for its venvs)

REPO = Path(__file__).resolve().parent.parent
OWN_TESTS = (
    "tests/test_catalogue.py",
    "tests/test_config.py",
    "tests/test_discover.py",
    "tests/test_reporters.py",
    "tests/test_rule_fixtures.py",
)
TARGET_PCT = 10.0


@dataclass
class Bench:
    name: str
    command: list[str]
    cwd: Path
    plain: list[tuple[float, float]] = field(default_factory=list)
    audit: list[tuple[float, float]] = field(default_factory=list)
    outcome: str = ""

    def run(self, audited: bool) -> None:
        extra = ["--gevent-audit"] if audited else []
        before = os.times()
        start = time.perf_counter()
        result = subprocess.run(
            [*self.command, *extra], cwd=self.cwd, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        after = os.times()
        if result.returncode not in (0, 1):
            raise SystemExit(f"{self.name}: pytest exited {result.returncode}\n{result.stdout}")
        cpu = after.children_user - before.children_user
        cpu += after.children_system - before.children_system
        (self.audit if audited else self.plain).append((wall, cpu))
        self.outcome = result.stdout.strip().splitlines()[-1].strip("= ")

    def summary(self) -> dict:
        def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
            return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

        (plain_wall, plain_cpu), (audit_wall, audit_cpu) = medians(self.plain), medians(self.audit)
        return {
            "suite": self.name,
            "outcome": self.outcome,
            "rounds": len(self.plain),
            "plain_wall_s": round(plain_wall, 3),
            "audit_wall_s": round(audit_wall, 3),
            "plain_cpu_s": round(plain_cpu, 3),
            "audit_cpu_s": round(audit_cpu, 3),
            "overhead_wall_pct": round(100 * (audit_wall / plain_wall - 1), 1),
            "overhead_cpu_pct": round(100 * (audit_cpu / plain_cpu - 1), 1),
        }


def benches(names: list[str], workdir: Path) -> list[Bench]:
    out = []
    if "patchaudit" in names:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *OWN_TESTS]
        out.append(Bench("patchaudit tests (in-process subset)", command, REPO))
    for name in names:
        if name in real_suite.SUITES:
            prepared = real_suite.prepare(real_suite.SUITES[name], workdir)
            label = f"{name} {prepared.suite.version}"
            out.append(Bench(label, prepared.command(), prepared.cwd))
    return out


def main(argv: list[str] | None = None) -> int:
    choices = ["patchaudit", *sorted(real_suite.SUITES)]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=choices)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/patchaudit-real-suites"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    suites = benches(args.suite or choices, args.workdir)
    for round_ in range(args.rounds):
        for bench in suites:
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for audited in order:
                bench.run(audited)
    rows = [b.summary() for b in suites]
    print(
        f"{'suite':40} {'plain':>8} {'audit':>8} {'wall':>7} {'cpu':>7}   (medians of "
        f"{args.rounds}; target <= {TARGET_PCT:g}%)"
    )
    for row in rows:
        print(
            f"{row['suite']:40} {row['plain_wall_s']:7.2f}s {row['audit_wall_s']:7.2f}s "
            f"{row['overhead_wall_pct']:+6.1f}% {row['overhead_cpu_pct']:+6.1f}%   {row['outcome']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
