"""`patchaudit demo` end to end on one shape: both variants served, the broken one explained.

Timing is never asserted (machines are noisy); what is asserted is that every request was
answered and which runtime findings explain the broken variant.
"""

from __future__ import annotations

import json

from .conftest import REPO, run_cli


def test_demo_serves_broken_and_fixed_and_names_the_cause() -> None:
    result = run_cli(
        "demo",
        "--shapes",
        "stale-sleep",
        "-n",
        "12",
        "-c",
        "4",
        "--format",
        "json",
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    runs = {run["variant"]: run for run in json.loads(result.stdout)["runs"]}
    assert set(runs) == {"bad", "fixed"}
    for run in runs.values():
        assert run["problem"] is None
        assert run["completed"] == 12 and run["errors"] == 0
    assert "MPA251" in runs["bad"]["findings"]
    assert "MPA251" not in runs["fixed"]["findings"]


def test_demo_reports_an_app_that_cannot_start() -> None:
    result = run_cli(
        "demo",
        "--shapes",
        "eventlet-after-gevent",
        "-n",
        "5",
        "--format",
        "json",
        cwd=REPO,
        timeout=120,
    )
    runs = {run["variant"]: run for run in json.loads(result.stdout)["runs"]}
    assert "cannot release un-acquired lock" in runs["bad"]["problem"]
    assert runs["fixed"]["completed"] == 5


def test_unknown_shape_is_a_one_line_error() -> None:
    result = run_cli("demo", "--shapes", "nope", cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "patchaudit: error: unknown demo shape 'nope' (choose from stale-sleep, cpu-bound, "
        "c-driver, thread-false-lock, eventlet-after-gevent)"
    ]
