"""Regression fixtures for each class of wrong warning the real-code benchmark found.

``fixtures/precision/<class>/`` is a small project in the shape of the real code (rewritten, not
copied) whose expectation comments pin every finding, true ones included, so a fix for a class
can not just switch a rule off. The benchmark itself (``benchmarks/real_projects.py``) checks the
real projects; these keep each class fixed in the test suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import check

from ._expect import expectations_in, mismatches
from .conftest import FIXTURES, isolated_copy, run_cli

PRECISION = FIXTURES / "precision"
CLASSES = sorted(p.name for p in PRECISION.iterdir() if p.is_dir())


def _report(project: Path):
    config = load_config([project], REGISTRY.keys(), config_file=None)
    return check([project], config, cwd=project, use_cache=False, jobs=1)


@pytest.mark.parametrize("name", CLASSES)
def test_reports_exactly_the_expected_findings(name: str, tmp_path: Path) -> None:
    project = isolated_copy(PRECISION / name, tmp_path)
    report = _report(project)
    assert not [e for e in report.errors if "internal error" in e], report.errors
    assert mismatches(expectations_in(project), [f.to_json() for f in report.findings]) == []


def test_the_framework_own_package_is_not_audited_and_says_so(tmp_path: Path) -> None:
    report = _report(isolated_copy(PRECISION / "framework-own", tmp_path))
    assert any("framework's own package" in note for note in report.notes), report.notes


def test_show_programs_names_each_launcher_and_framework(tmp_path: Path) -> None:
    project = isolated_copy(PRECISION / "locust", tmp_path)
    result = run_cli("check", ".", "--no-cache", "--format", "json", cwd=project)
    programs = {p["entry"]: p for p in json.loads(result.stdout)["programs"]}
    assert programs["load/shop_journey.py"]["kind"] == "locust"
    assert programs["load/shop_journey.py"]["frameworks"] == ["gevent"]
    assert programs["load/shop_journey.py"]["patched_by_launcher"] == "gevent"
    assert programs["load/debug_one.py"]["kind"] == "script"
    assert programs["load/debug_one.py"]["launcher"] == "python load/debug_one.py"
