"""A snapshot of `patchaudit check fixtures/`: every change to any finding shows up in review.

Regenerate after an intended change with
``PATCHAUDIT_UPDATE_SNAPSHOTS=1 pytest tests/test_snapshot.py`` and review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .conftest import FIXTURES, REPO, run_cli

SNAPSHOT = REPO / "tests" / "snapshots" / "check_fixtures.txt"


def _matches_snapshot(folder: Path, snapshot: Path, what: str) -> str:
    """The concise report of `check .` in ``folder``, compared with (or, when updating,
    written to) ``snapshot``."""
    result = run_cli(
        "check",
        ".",
        "--format",
        "concise",
        "--fail-on",
        "never",
        cwd=folder,
        env={"NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if os.environ.get("PATCHAUDIT_UPDATE_SNAPSHOTS"):
        snapshot.write_text(result.stdout)
    assert result.stdout == snapshot.read_text(), (
        f"findings over {what} changed; review and rerun with PATCHAUDIT_UPDATE_SNAPSHOTS=1"
    )
    return result.stdout


def test_check_fixtures_matches_snapshot() -> None:
    _matches_snapshot(FIXTURES, SNAPSHOT, "fixtures/")


DEMO_SNAPSHOT = REPO / "tests" / "snapshots" / "check_demo_apps.txt"


def test_check_demo_apps_matches_snapshot(tmp_path: Path) -> None:
    """The demo apps ship inside the package, which the project's own check excludes: they are
    checked as a project of their own, the broken ones with their findings, the fixed clean."""
    apps = Path(shutil.copytree(REPO / "patchaudit" / "harness" / "demo_apps", tmp_path / "demo"))
    (apps / "pyproject.toml").write_text("[tool.patchaudit]\n")
    report = _matches_snapshot(apps, DEMO_SNAPSHOT, "the demo apps")
    assert "/fixed/" not in report
