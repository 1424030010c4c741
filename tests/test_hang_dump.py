"""The probe's hang dump while serving: the ``stalled`` event, taken while the handlers wait.

Runs the real probe (real gevent, real sockets on 127.0.0.1) on a small app; the end-to-end
report of the same dump is covered by the ``fixtures/apps/MPA854`` pair.
"""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import assert_nothing_left, write_project
from .test_audit_cli import _audit
from .test_probe import make_spec, only, probe, write_app

WAITS_FOREVER = """
    from gevent import monkey
    monkey.patch_all()

    import threading

    from gevent.event import Event

    LOCK = threading.Lock()
    READY = Event()


    def application(environ, start_response):
        with LOCK:
            READY.wait()  # line 14: nothing ever sets it
        start_response("200 OK", [])
        return [b"ok"]
"""


def test_requests_that_stop_completing_dump_what_each_handler_waits_on(tmp_path: Path) -> None:
    project = write_app(tmp_path / "proj", {"app.py": WAITS_FOREVER})
    serve = {"paths": ["/"], "requests": 4, "concurrency": 2, "request_timeout": 1}
    run = probe(tmp_path, make_spec(project, "app", callable_="application", serve=serve))
    stalled = only(run, "stalled")
    assert (stalled["path"], stalled["timeout"]) == ("/", 1.0)
    handlers = [g for g in stalled["greenlets"] if g["request"]]
    # the request sent alone is still parked on the event, holding the lock
    assert [g["waits_for"] for g in handlers] == [{"type": "Event", "name": "READY"}]
    innermost = [f for f in handlers[0]["stack"] if f["file"] == str(project / "app.py")][-1]
    assert (innermost["line"], innermost["function"]) == (14, "application")
    serve_event = only(run, "serve")
    assert serve_event["single_error"].startswith("no response within the request timeout: ")
    # the batch's first request waits for the lock; once it times out the rest are not sent
    assert serve_event["statuses"] == {"none": 2, "not-sent": 2}
    assert only(run, "done")["status"] == "ok"


def test_a_thread_waiting_on_a_stdlib_event_is_named_on_a_timeout(tmp_path: Path) -> None:
    app = (
        "import threading\n"
        "\n"
        "ready = threading.Event()\n"
        "\n"
        "\n"
        "def worker():\n"
        "    ready.wait()\n"  # line 7: nothing sets it
        "\n"
        "\n"
        "thread = threading.Thread(target=worker)\n"
        "thread.start()\n"
        "thread.join()\n"  # line 12
    )
    project = write_project(tmp_path, {"app.py": app})
    args = ("app", "--mode", "as-is", "--format", "json", "--no-static")
    result, marker = _audit(project, *args, "--timeout", "3")
    assert result.returncode == 2
    assert json.loads(result.stdout)["timeline"]["hang"] == [
        "a thread at app.py:7 in worker (`ready.wait()`) on Event `ready`"
    ]
    assert_nothing_left(marker)
