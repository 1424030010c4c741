"""`patchaudit demo` end to end: every shape served broken and fixed, the broken one explained.

Timing is never asserted (machines are noisy); what is asserted is that every request was
answered and which runtime findings explain the broken variant.
"""

from __future__ import annotations

import json

import pytest

from .conftest import REPO, run_cli

pytestmark = pytest.mark.slow  # every broken app and its fix under load

#: shape -> the finding that explains its broken variant, and how the broken variant ends
EXPECTED = {
    "stale-sleep": ("MPA251", None),
    "cpu-bound": ("MPA851", None),
    "c-driver": ("MPA852", None),
    "thread-false-lock": ("MPA311", "froze: no response until it was killed after 5 s"),
    "eventlet-after-gevent": ("MPA451", "RuntimeError: cannot release un-acquired lock"),
}


def test_every_shape_is_explained_and_its_fixed_twin_is_clean() -> None:
    """One run of every shape: the broken variant has its finding (or fails the way it
    should), the fixed twin answers every request without it. (On a quiet machine the fixed
    twins have no finding at all; on a loaded one a process that waits for a core can show a
    hub block, MPA851, like any program would.)"""
    result = run_cli(
        "demo", "-n", "12", "-c", "4", "--timeout", "5", "--format", "json", cwd=REPO, timeout=240
    )
    assert result.returncode == 0, result.stderr
    runs = {(run["shape"], run["variant"]): run for run in json.loads(result.stdout)["runs"]}
    assert set(runs) == {(shape, v) for shape in EXPECTED for v in ("bad", "fixed")}
    for shape, (code, problem) in EXPECTED.items():
        bad, fixed = runs[shape, "bad"], runs[shape, "fixed"]
        assert code in bad["findings"], (shape, bad)
        if problem is None:
            assert bad["problem"] is None and bad["completed"] == 12, (shape, bad)
        else:
            assert problem in bad["problem"], (shape, bad)
        assert fixed["problem"] is None, (shape, fixed)
        assert (fixed["completed"], fixed["errors"]) == (12, 0), shape
        assert code not in fixed["findings"], (shape, fixed)


def test_unknown_shape_is_a_one_line_error() -> None:
    result = run_cli("demo", "--shapes", "nope", cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "patchaudit: error: unknown demo shape 'nope' (choose from stale-sleep, cpu-bound, "
        "c-driver, thread-false-lock, eventlet-after-gevent)"
    ]
