"""Every rule has a bad and a fixed fixture; the findings must match the expectation comments.

Layout: ``fixtures/rules/<CODE>/bad.py`` and ``good.py``, or ``bad/`` and ``good/`` folders for
rules that need several modules. A line expected to be reported carries ``# <CODE>`` (several
codes may follow each other; ``tests/_expect.py`` has the full grammar, with column and message
pins). The comparison is exact: every finding of every rule, by code, file and line, must be
expected, and every expectation must be found.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import check

from ._expect import Expectation, expectations_in, mismatches
from .conftest import FIXTURES, isolated_copy

RULES_DIR = FIXTURES / "rules"
CODES = sorted(code for code, rule in REGISTRY.items() if rule.kind != "runtime")


def _variant(code: str, kind: str) -> Path:
    folder = RULES_DIR / code
    for candidate in (folder / f"{kind}.py", folder / kind):
        if candidate.exists():
            return candidate
    pytest.fail(f"{code} has no {kind} fixture (expected {folder}/{kind}.py or {folder}/{kind}/)")


def _assert_reports_exactly(project: Path, expected: list[Expectation]) -> None:
    config = load_config([project], REGISTRY.keys(), config_file=None)
    report = check([project], config, cwd=project, use_cache=True, jobs=1)
    assert not [e for e in report.errors if "internal error" in e], report.errors
    assert mismatches(expected, [f.to_json() for f in report.findings]) == []


@pytest.mark.parametrize("code", CODES)
def test_bad_fixture_reports_exactly_the_expected_findings(code: str, tmp_path: Path) -> None:
    project = isolated_copy(_variant(code, "bad"), tmp_path)
    expected = expectations_in(project)
    assert any(e.code == code for e in expected), f"bad fixture for {code} expects no {code}"
    _assert_reports_exactly(project, expected)


@pytest.mark.parametrize("code", CODES)
def test_good_fixture_reports_exactly_the_expected_findings(code: str, tmp_path: Path) -> None:
    project = isolated_copy(_variant(code, "good"), tmp_path)
    expected = expectations_in(project)
    assert not any(e.code == code for e in expected), (
        f"fixed fixture for {code} still expects {code}"
    )
    _assert_reports_exactly(project, expected)
