"""A snapshot of `patchaudit check fixtures/`: every change to any finding shows up in review.

Regenerate after an intended change with
``PATCHAUDIT_UPDATE_SNAPSHOTS=1 pytest tests/test_snapshot.py`` and review the diff.
"""

from __future__ import annotations

import os

from .conftest import FIXTURES, REPO, run_cli

SNAPSHOT = REPO / "tests" / "snapshots" / "check_fixtures.txt"


def test_check_fixtures_matches_snapshot() -> None:
    result = run_cli(
        "check",
        ".",
        "--no-cache",
        "--format",
        "concise",
        "--fail-on",
        "never",
        cwd=FIXTURES,
        env={"NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if os.environ.get("PATCHAUDIT_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(result.stdout)
    assert result.stdout == SNAPSHOT.read_text(), (
        "findings over fixtures/ changed; review and rerun with PATCHAUDIT_UPDATE_SNAPSHOTS=1"
    )
