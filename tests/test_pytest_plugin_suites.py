"""`pytest --gevent-audit` on every suite in fixtures/suites, with exact expectations.

Each ``fixtures/suites/<CODE>/{bad,fixed}/`` is a small test suite plus ``suite.toml`` (how to
run it: ``launcher``, ``args``, ``requires``). A ``# MPA153`` comment on a line of a ``.py`` or
``.toml`` file means the audit reports that code on that line (grammar: ``tests/_expect.py``);
the comparison is exact over all findings. Like the runtime apps, ``bad`` must show its code and
``fixed`` must not, nor any warning or error. Every run is a real pytest in a subprocess
(patching cannot be undone).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._expect import Expectation, expectations_in, mismatches
from .conftest import FIXTURES, require

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITES = FIXTURES / "suites"
CASES = sorted((p.parent.name, p.name) for p in SUITES.glob("*/*") if (p / "suite.toml").exists())
# Plugins that only cost start-up time here (hypothesis' takes about a second per run).
QUIET = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]


def expectations(suite: Path) -> list[Expectation]:
    # suite.toml configures this test, not the suite under audit.
    return expectations_in(suite, ("*.py", "*.toml"), skip=("suite.toml",))


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
    require(*options.get("requires", []))
    result, report = run_suite(suite, options)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr
    assert report["errors"] == []
    problems = mismatches(expectations(suite), report["findings"])
    assert problems == [], "\n".join(problems) + json.dumps(report["findings"], indent=1)[:4000]
    codes = {f["rule"] for f in report["findings"]}
    if variant == "bad":
        assert code in codes
    else:
        assert code not in codes
        assert [f for f in report["findings"] if f["severity"] != "info"] == []
