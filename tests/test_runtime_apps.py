"""`patchaudit TARGET` end to end on every app in fixtures/apps, in a subprocess.

Each ``fixtures/apps/<CODE>/{bad,fixed}/`` holds a small application and ``audit.toml`` (the
target and options); a rule with several ways to go wrong has more pairs, ``bad-<what>`` and
``fixed-<what>``. Comments on the reported lines give the exact expected findings of the
merged static and runtime report: ``# MPA201`` is a finding, and ``# MPA201 (MPA251)`` is a
static finding that the runtime audit confirmed with MPA251 at the same place (the grammar, with
column and message pins, is in ``tests/_expect.py``). An app that imports a library that is not
installed is skipped, ``needs <library>``.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from ._expect import expectations_in, mismatches
from .conftest import FIXTURES, isolated_copy, once_more_after_fork_race, require, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APPS = FIXTURES / "apps"
#: ``apps/outcomes``: how a run went (5xx answers, a missing callable, a failed import), which the
#: audit reports as errors with the app's line rather than as a rule's findings.
OUTCOMES = "outcomes"
CASES = sorted((p.parent.name, p.name) for p in APPS.glob("*/*") if (p / "audit.toml").exists())


def _imported_libraries(project: Path) -> set[str]:
    """Top-level names the app imports that are neither its own modules nor the stdlib's.

    Derived from the code rather than listed in audit.toml, so a new app cannot forget one.
    """
    own = {p.stem for p in project.rglob("*.py")} | {
        p.name for p in project.rglob("*") if p.is_dir()
    }
    imported: set[str] = set()
    for path in project.rglob("*.py"):
        try:
            tree = ast.parse(path.read_text())
        except SyntaxError:
            continue  # a broken module is the audit's business, not a dependency
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
    return imported - own - set(sys.stdlib_module_names)


def _options(project: Path) -> dict:
    return tomllib.loads((project / "audit.toml").read_text())


def _audit(project: Path) -> tuple[int, dict]:
    options = _options(project)
    args = ["audit", options["target"], "--format", "json", "--timeout", "60"]
    for key in ("mode", "requests", "concurrency", "timeout"):
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
    require(*sorted(_imported_libraries(project)))
    expected = expectations_in(project)
    if code == "MPA651":  # apps that fork and reap: gevent's fork race (see conftest)
        returncode, report = once_more_after_fork_race(
            lambda: _audit(project), lambda got: got[1]["errors"]
        )
    else:
        returncode, report = _audit(project)
    # Some broken apps cannot even be imported; that error is part of what the audit shows.
    expected_error = _options(project).get("expect_error")
    if expected_error:
        assert [e for e in report["errors"] if expected_error in e], report["errors"]
    else:
        assert report["errors"] == [], report["errors"]
    problems = mismatches(expected, report["findings"])
    assert problems == [], "\n".join(problems) + json.dumps(report["findings"], indent=1)[:4000]
    codes_found = {f["rule"] for f in report["findings"]} | {
        c for e in expected for c in e.confirmed
    }
    if code == OUTCOMES:  # what the audit says of the run itself: an error, no rule
        assert bool(expected_error) is (variant.partition("-")[0] == "bad")
    if variant.partition("-")[0] == "bad":
        if code != OUTCOMES:
            assert code in codes_found, f"the bad app for {code} does not show {code}"
        assert returncode == (2 if expected_error else 1)
    else:
        assert code not in codes_found
        serious = [f for f in report["findings"] if f["severity"] in ("error", "warning")]
        assert serious == [], serious
        assert returncode == 0
    assert "timeline" in report and report["timeline"]["target"]


def test_an_app_is_skipped_when_a_library_it_imports_is_missing(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from . import views\n")
    (tmp_path / "pkg" / "views.py").write_text("import json\nimport pkg.helpers\n")
    (tmp_path / "service.py").write_text(
        "from gevent import monkey\nimport psycopg2.extras\nimport patchaudit_no_such_lib\n"
    )
    libraries = _imported_libraries(tmp_path)
    # The app's own modules and the stdlib are not dependencies.
    assert libraries == {"gevent", "psycopg2", "patchaudit_no_such_lib"}
    with pytest.raises(pytest.skip.Exception, match="^needs patchaudit_no_such_lib$"):
        require(*sorted(libraries))
    with pytest.raises(pytest.skip.Exception, match="^needs patchaudit_no_such_lib.sub$"):
        require("patchaudit_no_such_lib.sub")  # find_spec raises for a missing parent
