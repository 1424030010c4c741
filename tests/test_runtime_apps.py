"""`patchaudit TARGET` end to end on every app in fixtures/apps, in a subprocess.

Each ``fixtures/apps/<CODE>/{bad,fixed}/`` holds a small application and ``audit.toml`` (the
target and options). Comments on the reported lines give the exact expected findings of the
merged static and runtime report: ``# MPA201`` is a finding, and ``# MPA201 (MPA251)`` is a
static finding that the runtime audit confirmed with MPA251 at the same place.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, isolated_copy, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APPS = FIXTURES / "apps"
EXPECT = re.compile(r"#\s*(MPA\d{3})(?:\s*\((MPA\d{3})\))?")
CASES = sorted((p.parent.name, p.name) for p in APPS.glob("*/*") if (p / "audit.toml").exists())


Place = tuple[str, str, int]


def _expectations(project: Path) -> tuple[set[Place], dict[Place, set[str]]]:
    found: set[Place] = set()
    confirmed: dict[Place, set[str]] = {}
    for path in sorted(project.rglob("*.py")):
        rel = path.relative_to(project).as_posix()
        for number, text in enumerate(path.read_text().splitlines(), start=1):
            comment = text.partition("#")[2]
            for code, confirmation in EXPECT.findall("#" + comment):
                found.add((code, rel, number))
                if confirmation:
                    confirmed.setdefault((code, rel, number), set()).add(confirmation)
    return found, confirmed


def _options(project: Path) -> dict:
    return tomllib.loads((project / "audit.toml").read_text())


def _audit(project: Path) -> tuple[int, dict]:
    options = _options(project)
    args = ["audit", options["target"], "--format", "json", "--no-cache", "--timeout", "60"]
    for key in ("mode", "requests", "concurrency"):
        if key in options:
            args += [f"--{key}", str(options[key])]
    result = run_cli(*args, cwd=project, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("code, variant", CASES, ids=[f"{c}-{v}" for c, v in CASES])
def test_app_audit_reports_exactly_the_expected_findings(
    code: str, variant: str, tmp_path: Path
) -> None:
    project = isolated_copy(APPS / code / variant, tmp_path)
    expected, confirmations = _expectations(project)
    returncode, report = _audit(project)
    # Some broken apps cannot even be imported; that error is part of what the audit shows.
    expected_error = _options(project).get("expect_error")
    if expected_error:
        assert [e for e in report["errors"] if expected_error in e], report["errors"]
    else:
        assert report["errors"] == [], report["errors"]
    got = {(f["rule"], f["path"], f["line"]) for f in report["findings"]}
    assert got == expected, json.dumps(report["findings"], indent=1)[:4000]
    by_place = {(f["rule"], f["path"], f["line"]): f for f in report["findings"]}
    for place, codes in confirmations.items():
        assert codes <= set(by_place[place]["evidence"].get("confirmed_at_runtime", [])), place
    codes_found = {rule for rule, _, _ in got} | {c for cs in confirmations.values() for c in cs}
    if variant == "bad":
        assert code in codes_found, f"the bad app for {code} does not show {code}"
        assert returncode == (2 if expected_error else 1)
    else:
        assert code not in codes_found
        serious = [f for f in report["findings"] if f["severity"] in ("error", "warning")]
        assert serious == [], serious
        assert returncode == 0
    assert "timeline" in report and report["timeline"]["target"]
