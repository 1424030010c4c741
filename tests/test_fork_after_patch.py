"""MPA651 at run time: forks gevent supports stay quiet, what breaks after a fork is reported.

Each case audits a small real app in a subprocess (`--no-static`, so only what the probe saw
counts); the fixture pairs in ``fixtures/apps/MPA651`` cover the reported cases end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import assert_nothing_left, once_more_after_fork_race, write_project
from .test_audit_cli import PATCHED, _audit

FORKS = PATCHED + (
    "import multiprocessing\n"
    "import os\n"
    "\n"
    "import gevent\n"
    "\n"
    "gevent.spawn(gevent.sleep, 5)\n"  # the hub runs, with a greenlet the child does not get
    "pid = os.fork()\n"  # a plain fork: gevent's os.fork re-initialises the child's hub
    "if pid == 0:\n"
    "    os._exit(0)\n"
    "while os.waitpid(pid, os.WNOHANG) == (0, 0):\n"
    "    gevent.sleep(0.01)\n"
    "job = multiprocessing.Process(target=print, args=('job',))\n"  # default start method: fork
    "job.start()\n"
    "job.join(timeout=10)\n"
)

pytestmark = pytest.mark.slow  # apps that fork, each audited twice on gevent's fork race


def _findings(project: Path, target: str) -> tuple[dict, str]:
    # 15 s: the app ends in about 2; a run that hits gevent's fork race waits out all of it
    args = (target, "--format", "json", "--no-static", "--timeout", "15")

    def run() -> tuple[dict, str]:
        result, marker = _audit(project, *args)
        return json.loads(result.stdout), marker

    return once_more_after_fork_race(run, lambda got: got[0]["errors"])


def test_a_plain_fork_and_a_process_in_a_patched_app_are_clean(tmp_path: Path) -> None:
    report, marker = _findings(write_project(tmp_path, {"jobs.py": FORKS}), "jobs")
    assert report["errors"] == []
    assert [f for f in report["findings"] if f["rule"] == "MPA651"] == []
    assert_nothing_left(marker)


def test_daemonizing_before_the_hub_runs_is_clean(tmp_path: Path) -> None:
    # gevent creates its hub on first use: patched but idle, nothing of the loop is closed.
    app = PATCHED + "import os\n\nos.closerange(3, 64)\n"
    report, marker = _findings(write_project(tmp_path, {"worker.py": app}), "worker")
    assert report["errors"] == []
    assert [f for f in report["findings"] if f["rule"] == "MPA651"] == []
    assert_nothing_left(marker)


def test_a_fork_around_gevents_is_reported_at_its_line(tmp_path: Path) -> None:
    app = PATCHED + (
        "import os\n"
        "\n"
        "import gevent\n"
        "\n"
        "gevent.spawn(gevent.sleep, 5)\n"  # the hub runs
        "raw_fork = monkey.get_original('os', 'fork')\n"
        "pid = raw_fork()\n"  # line 11: the child keeps the parent's loop, no hub.reinit()
        "if pid == 0:\n"
        "    os._exit(0)\n"
    )
    report, marker = _findings(write_project(tmp_path, {"worker.py": app}), "worker")
    (finding,) = [f for f in report["findings"] if f["rule"] == "MPA651"]
    assert (finding["path"], finding["line"], finding["severity"]) == ("worker.py", 11, "warning")
    assert "skips `hub.reinit()`" in finding["message"]
    assert_nothing_left(marker)
