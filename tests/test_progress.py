"""The status line of the runtime audit and of `patchaudit demo`: on a terminal it names each
phase as it happens and is erased before the report; a pipe gets none of it."""

from __future__ import annotations

import sys
from pathlib import Path

from ._terminal import run_on_a_terminal
from .conftest import run_cli, write_project

# An import and requests slow enough for the quarter-second updates to see both phases.
SLOW_APP = """from gevent import monkey

monkey.patch_all()

import time  # noqa: E402

time.sleep(0.6)


def application(environ, start_response):
    time.sleep(0.3)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""
AUDIT = ("app:application", "--requests", "2", "--concurrency", "1")
NOW = {"PATCHAUDIT_PROGRESS_DELAY": "0"}


def test_audit_names_each_phase_on_a_terminal_then_erases_it(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", {"app.py": SLOW_APP})
    code, output = run_on_a_terminal(
        [sys.executable, "-m", "patchaudit", *AUDIT], cwd=project, env=NOW
    )
    assert code == 0, output
    phases = [
        "patchaudit: static check: parsed 1/1 files",
        "patchaudit: importing `app:application` in the probe (",
        "patchaudit: serving `app:application`: 2 requests (",
    ]
    positions = [output.find(phase) for phase in phases]
    assert -1 not in positions and positions == sorted(positions), output
    before_report = output[: output.index("Patch timeline")]
    # erased before the report: after the last erase, no status text (only its colour codes)
    assert "patchaudit" not in before_report[before_report.rindex("\r\x1b[K") :]


def test_audit_through_a_pipe_has_no_status_line(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", {"app.py": SLOW_APP})
    result = run_cli(*AUDIT, cwd=project, env=NOW)
    assert result.returncode == 0, result.stderr
    assert "importing" not in result.stderr and "\x1b" not in result.stderr
    assert result.stdout == "All checks passed (1 file analysed).\n"


def test_demo_shows_which_app_it_is_serving(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "patchaudit", "demo", "--shapes", "stale-sleep", "-n", "4"]
    code, output = run_on_a_terminal([*argv, "-c", "2"], cwd=tmp_path)
    assert code == 0, output
    assert output.startswith(
        "\r\x1b[Kpatchaudit demo: serving stale-sleep (bad), app 1 of 2"
        "\r\x1b[Kpatchaudit demo: serving stale-sleep (fixed), app 2 of 2"
        "\r\x1b[K"  # erased before the table
    ), output
    assert "patchaudit demo: the broken app next to its fix" in output


def test_demo_through_a_pipe_has_no_status_line(tmp_path: Path) -> None:
    result = run_cli("demo", "--shapes", "stale-sleep", "-n", "4", "-c", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
