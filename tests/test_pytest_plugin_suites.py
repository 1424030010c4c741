"""`pytest --gevent-audit` on every suite in fixtures/suites, with exact expectations.

Each ``fixtures/suites/<CODE>/{bad,fixed}/`` is a small test suite plus ``suite.toml`` (how to
run it: ``launcher``, ``args``, ``requires``). A ``# MPA153`` comment on a line of a ``.py`` or
``.toml`` file means the audit reports that code on that line; the comparison is exact over all
findings. Like the runtime apps, ``bad`` must show its code and ``fixed`` must not, nor any
warning or error. Every run is a real pytest in a subprocess (patching cannot be undone).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITES = FIXTURES / "suites"
CODE = re.compile(r"MPA\d{3}")
CASES = sorted((p.parent.name, p.name) for p in SUITES.glob("*/*") if (p / "suite.toml").exists())
# Plugins that only cost start-up time here (hypothesis' takes about a second per run).
QUIET = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]

Place = tuple[str, str, int]


def expectations(suite: Path) -> set[Place]:
    found: set[Place] = set()
    for path in sorted([*suite.rglob("*.py"), *suite.rglob("*.toml")]):
        if path.name == "suite.toml":
            continue
        rel = path.relative_to(suite).as_posix()
        for number, text in enumerate(path.read_text().splitlines(), start=1):
            if "#" in text:
                found.update((code, rel, number) for code in CODE.findall(text.partition("#")[2]))
    return found


def run_suite(suite: Path, options: dict, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = suite / "audit.json"
    launcher = (
        ["-m", "gevent.monkey", "--module", "pytest"]
        if options.get("launcher")
        else ["-m", "pytest"]
    )
    args = [
        sys.executable,
        *launcher,
        *QUIET,
        "--gevent-audit",
        "--gevent-audit-json",
        str(report),
        *options.get("args", []),
        *extra,
    ]
    result = subprocess.run(args, cwd=suite, capture_output=True, text=True, timeout=120)
    assert report.exists(), result.stdout + result.stderr
    return result, json.loads(report.read_text())


@pytest.mark.parametrize("code, variant", CASES, ids=[f"{c}-{v}" for c, v in CASES])
def test_suite_audit_reports_exactly_the_expected_findings(
    code: str, variant: str, tmp_path: Path
) -> None:
    suite = tmp_path / "suite"
    shutil.copytree(SUITES / code / variant, suite)
    options = tomllib.loads((suite / "suite.toml").read_text())
    for plugin in options.get("requires", []):
        if importlib.util.find_spec(plugin) is None:
            pytest.skip(f"needs {plugin}")
    result, report = run_suite(suite, options)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr
    assert report["errors"] == []
    got = {(f["rule"], f["path"], f["line"]) for f in report["findings"]}
    assert got == expectations(suite), json.dumps(report["findings"], indent=1)[:4000]
    codes = {rule for rule, _, _ in got}
    if variant == "bad":
        assert code in codes
    else:
        assert code not in codes
        assert [f for f in report["findings"] if f["severity"] != "info"] == []
