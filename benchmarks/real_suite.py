"""`pytest --gevent-audit` on the test suites of real, public gevent projects.

Each suite is installed from PyPI into a throwaway virtualenv under ``--workdir`` (default
``/tmp/patchaudit-real-suites``), together with this checkout of patchaudit, and its tests are
taken from the project's sdist. Nothing is vendored into this repository. Each suite then runs
``--rounds`` times without and with ``--gevent-audit``, interleaved (so a busy machine slows
both alike); the report gives median wall and CPU times, the overhead, and what the audit
found (the JSON document of the last audited run is kept next to the venv).

Suites (both run offline):

* ``gipc`` 1.8.0 -- gevent-cooperative child processes and pipes; 82 tests in ``test/``. They
  use nose-style ``setup``/``teardown`` methods, which pytest 8 dropped, so this venv gets
  ``pytest<8`` (the plugin supports pytest 7.4 too).
* ``geventhttpclient`` 2.6.1 -- gevent HTTP client (C parser, installed from the wheel); its
  ``tests/conftest.py`` calls ``gevent.monkey.patch_all()``. Tests marked ``network`` need the
  internet and are deselected.

Usage: python benchmarks/real_suite.py [--suite NAME ...] [--rounds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    packages: tuple[str, ...]  # pip requirements besides patchaudit
    tests: tuple[str, ...]  # pytest arguments, relative to the unpacked sdist
    wheel_only: bool = False  # install the project itself from its wheel (C extensions)


SUITES = {
    "gipc": Suite("gipc", "1.8.0", ("pytest>=7.4,<8",), ("test",)),
    "geventhttpclient": Suite(
        "geventhttpclient",
        "2.6.1",
        ("pytest>=8", "pytest-rerunfailures", "dpkt", "requests", "httplib2"),
        ("tests", "-m", "not network"),
        wheel_only=True,
    ),
}
# Plugins of the venv that are not the suite's own concern.
QUIET = ("-p", "no:cacheprovider")


@dataclass
class Prepared:
    suite: Suite
    python: Path
    cwd: Path  # the unpacked sdist: tests run from there, the package from site-packages

    def command(self, *extra: str) -> list[str]:
        return [str(self.python), "-m", "pytest", "-q", *QUIET, *self.suite.tests, *extra]


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def medians(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "-q", *args], check=True)


def prepare(suite: Suite, workdir: Path) -> Prepared:
    """A venv with the project, its test tools and patchaudit; the sdist's tests unpacked."""
    home = workdir / suite.name
    venv = home / "venv"
    python = venv / "bin" / "python"
    marker = home / ".ready"
    if not marker.exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pin = f"{suite.name}=={suite.version}"
        only = ["--only-binary", suite.name] if suite.wheel_only else []
        _pip(python, "install", *only, str(REPO), pin, *suite.packages)
        sdists = home / "sdist"
        _pip(python, "download", "--no-deps", "--no-binary", ":all:", "-d", str(sdists), pin)
        archive = next(sdists.glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(home, filter="data")
        marker.write_text(str(archive))
    else:  # measure this checkout, not the one the venv was made with
        _pip(python, "install", "--no-deps", "--force-reinstall", str(REPO))
    unpacked = next(p for p in home.iterdir() if p.is_dir() and p.name.startswith(suite.name))
    return Prepared(suite, python, unpacked)


def run_once(prepared: Prepared, *extra: str) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds (the child's user + system) of one pytest run."""
    before = os.times()
    start = time.perf_counter()
    result = subprocess.run(
        prepared.command(*extra), cwd=prepared.cwd, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, result


def measure(prepared: Prepared, rounds: int, report: Path) -> dict:
    plain, audited = Timing(), Timing()
    last = None
    for _ in range(rounds):
        for timing, extra in (
            (plain, ()),
            (audited, ("--gevent-audit", f"--gevent-audit-json={report}")),
        ):
            wall, cpu, result = run_once(prepared, *extra)
            if result.returncode not in (0, 1):
                raise SystemExit(
                    f"{prepared.suite.name}: pytest exited {result.returncode}\n"
                    + result.stdout[-3000:]
                    + result.stderr[-3000:]
                )
            timing.wall.append(wall)
            timing.cpu.append(cpu)
            if extra:
                last = result
    assert last is not None
    document = json.loads(report.read_text())
    (plain_wall, plain_cpu), (audit_wall, audit_cpu) = plain.medians(), audited.medians()
    section = last.stdout.split("= gevent audit =", 1)[-1].splitlines()[1:]
    return {
        "suite": f"{prepared.suite.name} {prepared.suite.version}",
        "command": " ".join(["pytest", *prepared.suite.tests]),
        "outcome": last.stdout.strip().splitlines()[-1].strip("= "),
        "rounds": rounds,
        "plain": {"wall_s": plain_wall, "cpu_s": plain_cpu, "walls": plain.wall},
        "audit": {"wall_s": audit_wall, "cpu_s": audit_cpu, "walls": audited.wall},
        "overhead_wall_pct": 100 * (audit_wall / plain_wall - 1),
        "overhead_cpu_pct": 100 * (audit_cpu / plain_cpu - 1),
        "findings": [
            {k: f.get(k) for k in ("rule", "severity", "path", "line", "message", "test")}
            for f in document["findings"]
        ],
        "summary": [line for line in section if line.strip()][:40],
        "json": str(report),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=sorted(SUITES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/patchaudit-real-suites"))
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    results = []
    for name in args.suite or sorted(SUITES):
        prepared = prepare(SUITES[name], args.workdir)
        result = measure(prepared, args.rounds, args.workdir / name / "audit.json")
        results.append(result)
        print(
            f"{result['suite']}: {result['outcome']}\n"
            f"  plain  {result['plain']['wall_s']:.2f}s wall {result['plain']['cpu_s']:.2f}s cpu\n"
            f"  audit  {result['audit']['wall_s']:.2f}s wall {result['audit']['cpu_s']:.2f}s cpu"
            f"  ({result['overhead_wall_pct']:+.1f}% wall, {result['overhead_cpu_pct']:+.1f}% cpu,"
            f" median of {args.rounds})"
        )
        for line in result["summary"]:
            print(f"  | {line}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
