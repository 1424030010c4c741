"""ruff's command-line conventions, end to end in subprocesses on ``fixtures/cli/conventions``:
``--exit-zero``, ``--statistics``, ``--show-settings``, reading stdin, ``--add-noqa`` and the
JSON fields ``name``, ``url``, ``end_line``, ``end_column``.

The fixture's expectation comments (``# MPA201``) say what is reported; every assertion is
derived from them, so the fixture and the tests cannot drift apart.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from patchaudit.rules import REGISTRY

from ._expect import expectations_in, mismatches, places
from .conftest import FIXTURES, isolated_copy, run_cli

FIXTURE = FIXTURES / "cli" / "conventions"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return isolated_copy(FIXTURE, tmp_path)


def _json(result: subprocess.CompletedProcess[str]) -> dict:
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def test_json_findings_carry_name_url_and_end_position(project: Path) -> None:
    result = run_cli("check", "--no-cache", "--format", "json", ".", cwd=project)
    assert result.returncode == 1, result.stderr
    document = _json(result)
    assert document["version"] == 1
    findings = document["findings"]
    assert mismatches(expectations_in(project), findings) == []
    for finding in findings:
        rule = REGISTRY[finding["rule"]]
        assert finding["name"] == rule.name
        assert finding["url"] == (
            f"https://github.com/patchaudit/patchaudit/blob/main/docs/rules/{rule.code}.md"
        )
        assert (FIXTURES.parent / rule.docs_path).is_file()  # the page the url names exists
    # `from time import sleep` on line 1: the whole statement, end column exclusive
    (sleep,) = [f for f in findings if (f["path"], f["line"]) == ("app.py", 1)]
    assert (sleep["end_line"], sleep["end_column"]) == (1, len("from time import sleep") + 1)
    # an import over three lines ends on its closing parenthesis
    (select,) = [f for f in findings if (f["path"], f["line"]) == ("app.py", 3)]
    assert (select["end_line"], select["end_column"]) == (5, 2)


def test_exit_zero_keeps_the_findings_and_exits_0(project: Path) -> None:
    failing = run_cli("check", "--no-cache", "--format", "concise", ".", cwd=project)
    passing = run_cli("check", "--no-cache", "--format", "concise", "--exit-zero", ".", cwd=project)
    assert (failing.returncode, passing.returncode) == (1, 0), passing.stderr
    assert passing.stdout == failing.stdout
    assert len(passing.stdout.splitlines()) == len(expectations_in(project)) + 1  # + "Found"
    # stronger than --fail-on, as in ruff; a usage error still exits 2
    both = run_cli("check", "--no-cache", "--fail-on", "info", "--exit-zero", ".", cwd=project)
    assert both.returncode == 0
    bad = run_cli("check", "--no-cache", "--exit-zero", "--select", "NOPE", ".", cwd=project)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_statistics_count_code_name_by_count(project: Path) -> None:
    counts = Counter(e.code for e in expectations_in(project))
    expected = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    result = run_cli("check", "--no-cache", "--statistics", ".", cwd=project)
    assert result.returncode == 1, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [[str(n), code, REGISTRY[code].name] for code, n in expected]
    as_json = run_cli("check", "--no-cache", "--statistics", "--format", "json", ".", cwd=project)
    assert _json(as_json) == [
        {"code": code, "name": REGISTRY[code].name, "count": n} for code, n in expected
    ]
    sarif = run_cli("check", "--no-cache", "--statistics", "--format", "sarif", ".", cwd=project)
    assert sarif.returncode == 2 and sarif.stdout == ""
    assert sarif.stderr.strip() == (
        "patchaudit: error: --statistics prints a table or JSON, not --format sarif"
    )


def test_expectations_are_what_the_fixture_says(project: Path) -> None:
    # the fixture itself: both files report, one line holds another linter's noqa
    assert {p for _, p, _ in places(expectations_in(project))} == {"app.py", "b.py"}
    assert "# noqa: E402" in (project / "app.py").read_text()
