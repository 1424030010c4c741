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
from .conftest import FIXTURES, isolated_copy, run_cli, write_project

PRECISION = FIXTURES / "precision"
CLASSES = sorted(p.name for p in PRECISION.iterdir() if p.is_dir())


def _report(project: Path):
    config = load_config([project], REGISTRY.keys(), config_file=None)
    return check([project], config, cwd=project, jobs=1)


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
    result = run_cli("check", ".", "--format", "json", cwd=project)
    programs = {p["entry"]: p for p in json.loads(result.stdout)["programs"]}
    assert programs["load/shop_journey.py"]["kind"] == "locust"
    assert programs["load/shop_journey.py"]["frameworks"] == ["gevent"]
    assert programs["load/shop_journey.py"]["patched_by_launcher"] == "gevent"
    assert programs["load/debug_one.py"]["kind"] == "script"
    assert programs["load/debug_one.py"]["launcher"] == "python load/debug_one.py"


def test_procfile_preload_with_gevent_worker_makes_the_app_imports_pre_patch(
    tmp_path: Path,
) -> None:
    project = write_project(
        tmp_path / "shop",
        {
            "Procfile": "web: gunicorn -k gevent --preload shop:app\n",
            "shop.py": "import requests\n\n\ndef app(environ, start_response):\n    pass\n",
        },
    )
    found = [(f.rule, f.path, f.line) for f in _report(project).findings]
    assert sorted(found) == [("MPA101", "shop.py", 1), ("MPA108", "Procfile", 1)]


def test_the_same_app_without_preload_is_patched_first(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "shop",
        {
            "Procfile": "web: gunicorn -k gevent shop:app\n",
            "shop.py": "import requests\n\n\ndef app(environ, start_response):\n    pass\n",
        },
    )
    assert [(f.rule, f.path, f.line) for f in _report(project).findings] == []


def test_patch_options_spread_from_django_settings_count_as_written(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "site",
        {
            "site/__init__.py": "",
            "site/settings.py": 'DEBUG = False\nGEVENT_PATCH = {"thread": False}\n',
            "wsgi.py": "from gevent import monkey\nfrom django.conf import settings\n\n"
            "monkey.patch_all(**settings.GEVENT_PATCH)\nimport threading\n",
        },
    )
    [finding] = _report(project).findings
    assert (finding.rule, finding.path, finding.line) == ("MPA301", "wsgi.py", 4)
    assert finding.evidence["settings"] == ["site/settings.py:GEVENT_PATCH"]


@pytest.mark.parametrize(
    "command",
    [
        "worker: celery -A tasks worker -P gevent --concurrency 100",
        "web: python -m gevent.monkey --module tasks",
        "web: gunicorn -k gevent tasks:app",
    ],
)
def test_a_launcher_that_patches_first_makes_its_app_a_patched_gevent_program(
    tmp_path: Path, command: str
) -> None:
    app = "import requests\nimport multiprocessing\n\nJOBS = multiprocessing.Queue()\n"
    project = write_project(tmp_path / "svc", {"Procfile": command + "\n", "tasks.py": app})
    found = [(f.rule, f.path, f.line) for f in _report(project).findings]
    # patched before the app loads: no patch-order finding, but it runs on gevent (MPA551)
    assert found == [("MPA551", "tasks.py", 4)]
    result = run_cli("check", "--show-programs", ".", cwd=project)
    assert result.stdout.startswith("tasks.py: ") and ", gevent: " in result.stdout


def test_a_suite_launched_by_gevent_monkey_gets_no_pytest_note(tmp_path: Path) -> None:
    conftest = "from gevent import monkey\n\nmonkey.patch_all()\n"
    files = {"tests/conftest.py": conftest, "tests/test_x.py": "def test_x():\n    pass\n"}
    plain = write_project(tmp_path / "plain", files)
    assert [f.rule for f in _report(plain).findings] == ["MPA107"]
    makefile = "test:\n\tpython -m gevent.monkey --module pytest tests\n"
    launched = write_project(tmp_path / "launched", {**files, "Makefile": makefile})
    assert _report(launched).findings == []
