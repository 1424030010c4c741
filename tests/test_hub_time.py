"""The probe's hub timer (``hub_run`` events) on real apps, and start-up work in the timeline.

Real probe runs in child interpreters with the installed gevent; the blocking work is real C
code that holds the GIL (a backtracking regex, ``json.loads`` of a big document), which
gevent's monitor thread cannot look at while it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import FIXTURES, isolated_copy, run_cli
from .test_probe import make_spec, probe, write_app

REGEX_APP = """
    from gevent import monkey
    monkey.patch_all()
    import re

    PATTERN = re.compile(r"^(\\w+)+$")

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            PATTERN.match("a" * 23 + "!")  # backtracks, holding the GIL
        start_response("200 OK", [])
        return [b"done"]
"""


def _app_lines(project: Path, frames: list[dict[str, Any]] | None) -> list[int]:
    return [f["line"] for f in frames or [] if f["file"] == str(project / "app.py")]


def test_a_c_call_holding_the_gil_is_timed_and_sampled_at_its_calling_line(
    tmp_path: Path,
) -> None:
    project = write_app(tmp_path / "proj", {"app.py": REGEX_APP})
    serve = {"paths": ["/fast", "/slow"], "requests": 2, "concurrency": 1, "max_blocking": 0.1}
    run = probe(tmp_path, make_spec(project, "app", callable_="app", serve=serve))
    runs = run.all("hub_run")
    assert runs, run.stderr_summary.text()
    sampled = [s for r in runs for s in r["samples"]]
    # Every long run was the slow path's, and its time went to the regex line.
    assert {s["path"] for s in sampled} == {"/slow"}
    assert all(r["duration"] > 0.1 for r in runs)
    heaviest = max(sampled, key=lambda s: s["weight"])
    assert _app_lines(project, heaviest["stack"])[-1] == 9
    assert heaviest["phase"] == "serve" and heaviest["weight"] > 0.05
    # pywsgi's greenlet ended with the request: no frame was left at the switch, the sample
    # taken while it ran is what names the line.
    assert any(r["finished"] and r["stack"] is None and r["samples"] for r in runs)


def test_work_while_the_app_is_imported_is_sampled_as_import(tmp_path: Path) -> None:
    project = write_app(
        tmp_path / "proj",
        {
            "app.py": """
                import json
                import gevent
                gevent.sleep(0)  # the hub, and with it the timer, starts
                DATA = json.loads("[" + ",".join(['{"a": [1, 2, 3]}'] * 200000) + "]")

                def app(environ, start_response):
                    start_response("200 OK", [])
                    return [b"ok"]
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "app", callable_="app", mode="gunicorn"))
    # The hub's run goes on into the probe's own next step (resolving the callable), where a
    # CPU tick may land too: those samples hold no app frame and name no line.
    samples = [
        s for r in run.all("hub_run") for s in r["samples"] if _app_lines(project, s["stack"])
    ]
    assert samples, run.stderr_summary.text()
    assert {s["phase"] for s in samples} == {"import"}
    assert {_app_lines(project, s["stack"])[-1] for s in samples} == {4}
    # gevent's monitor may see that work too; its reports never say "serve".
    assert all(b["phase"] != "serve" for b in run.all("block"))


def test_a_monitor_report_that_lands_after_its_run_ended_is_not_a_serving_block(
    tmp_path: Path,
) -> None:
    # gevent's monitor writes its report after walking every object, which on a big heap is
    # long after it looked: here a subscriber ahead of the probe's holds the report back until
    # the probe serves, deterministically. Reading the step then said "serve" for import-time
    # work (MPA851 "while serving" at whatever line the handler was on).
    project = write_app(
        tmp_path / "proj",
        {
            "app.py": """
                import sys
                import zope.event
                import gevent
                from gevent.monkey import get_original

                native_sleep = get_original("time", "sleep")

                def slow_report(event):
                    if type(event).__name__ == "EventLoopBlocked":
                        state = sys.modules["_patchaudit_probe._state"].S
                        for _ in range(5000):
                            if state.serve_path is not None:
                                break
                            native_sleep(0.001)

                zope.event.subscribers.insert(0, slow_report)
                gevent.sleep(0)  # the hub and the monitor start
                total = sum(i * i for i in range(15_000_000))  # start-up CPU, seen by both

                def app(environ, start_response):
                    gevent.sleep(0.05)
                    start_response("200 OK", [])
                    return [b"ok"]
            """
        },
    )
    run = probe(tmp_path, make_spec(project, "app", callable_="app", mode="gunicorn"))
    assert [b for b in run.all("block") if b["phase"] == "serve"] == []
    samples = [s for r in run.all("hub_run") for s in r["samples"]]
    assert samples and {s["phase"] for s in samples} == {"import"}, run.stderr_summary.text()
    assert {_app_lines(project, s["stack"])[-1] for s in samples} == {18}


def test_import_time_work_is_start_up_in_the_timeline_not_mpa851(tmp_path: Path) -> None:
    project = isolated_copy(FIXTURES / "apps" / "MPA851" / "fixed-import", tmp_path)
    args = ("audit", "catalogue:application", "--requests", "2")
    result = run_cli(*args, "--format", "json", cwd=project, timeout=180)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["findings"] == []
    (startup,) = report["timeline"]["startup_blocking"]
    assert startup["at"] == "catalogue.py:22" and startup["phase"] == "import"
    assert startup["function"] == "<module>" and startup["seconds"] > 0.1
