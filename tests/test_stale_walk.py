"""The probe's stale scan beyond plain globals: defaults, closures, partials, containers, bound
methods, object attributes and instances built from originals before patching.

Each test writes a small app into tmp_path and runs the real probe (a child interpreter, real
gevent), then compares the exact ``stale`` events of the app's modules.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .test_probe import NO_SERVE, make_spec, only, probe, write_app

PATCH = "from gevent import monkey\nmonkey.patch_all()\n"

HOLDERS = """
import concurrent.futures
import functools
import queue
import selectors
import threading
import time


def pause(seconds, sleep=time.sleep):
    sleep(seconds)


def pause_kw(seconds, *, sleep=time.sleep):
    sleep(seconds)


def make_backoff():
    nap = time.sleep

    def backoff(attempt):
        nap(attempt)

    return backoff


backoff = make_backoff()
short_nap = functools.partial(time.sleep, 0.0)
WAITS = {"pause": time.sleep, "more": [time.sleep]}
POOL = concurrent.futures.ThreadPoolExecutor(2)
SELECTOR = selectors.DefaultSelector()
current = threading.local()
GET = queue.SimpleQueue().get


class Local(threading.local):
    pass


request = Local()


class Service:
    registry = {"sleep": time.sleep}

    def pause(self, sleep=time.sleep):
        sleep(0)

    @staticmethod
    def quick(sleep=time.sleep):
        sleep(0)


class Holder:
    def __init__(self):
        self.sleeper = time.sleep


HOLDER = Holder()
"""


def _stale(run, module: str = "holders") -> set[tuple[str, str, str, str]]:
    return {
        (e["holder"], e["name"], e["original"], e["how"])
        for e in run.all("stale")
        if e["holder_module"] == module and e["how"] != "subclass"
    }


def test_every_indirect_holder_is_found_with_its_path(tmp_path: Path) -> None:
    project = write_app(tmp_path / "proj", {"holders.py": HOLDERS + PATCH})
    run = probe(tmp_path, make_spec(project, "holders", serve=NO_SERVE))
    assert only(run, "stale_scan")["complete"] is True
    assert _stale(run) == {
        ("holders", "pause(sleep=)", "time.sleep", "default"),
        ("holders", "pause_kw(sleep=)", "time.sleep", "default"),
        ("holders", "backoff<nap>", "time.sleep", "closure"),
        ("holders", "short_nap.func", "time.sleep", "partial"),
        ("holders", "WAITS['pause']", "time.sleep", "container"),
        ("holders", "WAITS['more'][0]", "time.sleep", "container"),
        ("holders", "POOL._work_queue", "queue.SimpleQueue", "instance"),
        ("holders", "SELECTOR", "selectors.EpollSelector", "instance"),
        ("holders", "current", "threading.local", "instance"),
        ("holders", "GET.__self__", "queue.SimpleQueue", "instance"),
        ("holders", "request", "threading.local", "instance"),
        ("holders.Service", "registry['sleep']", "time.sleep", "container"),
        ("holders.Service", "pause(sleep=)", "time.sleep", "default"),
        ("holders.Service", "quick(sleep=)", "time.sleep", "default"),
        ("holders", "HOLDER.sleeper", "time.sleep", "attribute"),
    }
    event = next(e for e in run.all("stale") if e["name"] == "POOL._work_queue")
    assert event["holder_kind"] == "module"
    assert event["holder_file"] == str(project / "holders.py")
    assert only(run, "stale_scan")["holders"] == len(run.all("stale"))
    assert not run.all("error")


def test_the_same_holders_built_after_patching_hold_nothing_stale(tmp_path: Path) -> None:
    project = write_app(tmp_path / "proj", {"holders.py": PATCH + HOLDERS})
    run = probe(tmp_path, make_spec(project, "holders", serve=NO_SERVE))
    assert _stale(run) == set()
    assert only(run, "stale_scan") and not run.all("error")


def test_objects_that_keep_working_after_patching_are_not_reported(tmp_path: Path) -> None:
    # Built before patching, yet they work under gevent (their waits take threading's patched
    # `_allocate_lock`, and gevent re-creates logging's handler locks): reporting them would
    # be a wrong warning.
    app = """
        import logging.config
        import queue
        import threading

        logging.config.dictConfig(
            {"version": 1, "handlers": {"h": {"class": "logging.StreamHandler"}},
             "root": {"handlers": ["h"]}}
        )
        HANDLER = logging.getLogger().handlers[0]
        JOBS = queue.Queue()
        READY = threading.Event()
        CHANGED = threading.Condition()
        SLOTS = threading.Semaphore(2)
        STATE = {"jobs": JOBS, "ready": READY}
    """
    project = write_app(tmp_path / "proj", {"keeps.py": textwrap.dedent(app) + PATCH})
    run = probe(tmp_path, make_spec(project, "keeps", serve=NO_SERVE))
    assert only(run, "stale_scan") and not run.all("error")
    assert _stale(run, "keeps") == set()


def test_native_queues_waited_on_by_native_threads_are_not_reported(tmp_path: Path) -> None:
    # A native thread started before patching waits on them: that works under gevent. (The
    # server patches after the import, as gunicorn's gevent worker does with --preload: a
    # module that patches itself while other threads run breaks its own import lock.)
    app = """
        import concurrent.futures
        import logging
        import logging.handlers
        import queue
        import threading

        current = threading.local()  # wrong whichever thread runs: the one holder reported
        RECORDS = queue.SimpleQueue()
        LISTENER = logging.handlers.QueueListener(RECORDS, logging.StreamHandler())
        LISTENER.start()
        logging.getLogger("app").addHandler(logging.handlers.QueueHandler(RECORDS))
        WARM = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        WARM.submit(int).result()  # its only worker is a native thread
    """
    project = write_app(tmp_path / "proj", {"warm.py": app})
    run = probe(tmp_path, make_spec(project, "warm", mode="gunicorn-preload", serve=NO_SERVE))
    assert only(run, "stale_scan") and not run.all("error")
    assert _stale(run, "warm") == {("warm", "current", "threading.local", "instance")}


def test_an_object_imported_elsewhere_is_reported_by_each_holder(tmp_path: Path) -> None:
    # The rule keeps the module that built it (it drops bindings that are imports); the probe
    # must report it there even when the importer comes first in sys.modules.
    project = write_app(
        tmp_path / "proj",
        {
            "app/__init__.py": "",
            "app/wsgi.py": "from app.jobs import POOL\n" + PATCH,
            "app/jobs.py": "import concurrent.futures\nPOOL = concurrent.futures."
            "ThreadPoolExecutor(1)\n",
        },
    )
    run = probe(tmp_path, make_spec(project, "app.wsgi", serve=NO_SERVE))
    found = {(e["holder"], e["name"]) for e in run.all("stale") if e["how"] == "instance"}
    assert found == {("app.wsgi", "POOL._work_queue"), ("app.jobs", "POOL._work_queue")}


def test_the_walk_is_bounded_and_never_runs_the_apps_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    app = f"""
        import sys
        import time

        class Lazy:
            # A proxy: reading any attribute runs code; the scan must not.
            def __getattr__(self, name):
                open({str(marker)!r}, "w").close()
                raise RuntimeError(name)

        class Loud:
            @property
            def __dict__(self):
                open({str(marker)!r}, "w").close()
                return {{"sleep": time.sleep}}

        class Masked:
            @property
            def __class__(self):  # werkzeug's LocalProxy computes it
                caller = sys._getframe(1).f_globals.get("__name__", "")
                if not caller.startswith("gevent"):  # gevent's own patch_all reads it
                    open({str(marker)!r}, "w").close()
                return Masked

        PROXY = Lazy()
        LOUD = Loud()
        MASKED = Masked()
        LOOP = []
        LOOP.append(LOOP)
        NEAR = [LOOP, [time.sleep]]                 # within bounds
        BIG = list(range(300000)) + [time.sleep]   # past the items looked at per container
        DEEP = [[[[[[time.sleep]]]]]]               # past the depth
        WIDE = [[list(range(200)) for j in range(200)] for i in range(13)]  # 520,000 items
    """
    project = write_app(tmp_path / "proj", {"heavy.py": textwrap.dedent(app) + PATCH})
    run = probe(tmp_path, make_spec(project, "heavy", serve=NO_SERVE))
    assert not run.all("error")
    scan = only(run, "stale_scan")
    assert scan["t"] - only(run, "owners")["t"] < 5
    assert scan["complete"] is False and scan["walked"] >= 500000
    assert not marker.exists()
    assert _stale(run, "heavy") == {("heavy", "NEAR[1][0]", "time.sleep", "container")}


BEHAVIOUR = """
import concurrent.futures, os, queue, signal, sys, threading
made = {
    "Queue": queue.Queue(), "SimpleQueue": queue.SimpleQueue(), "Event": threading.Event(),
    "Condition": threading.Condition(), "Semaphore": threading.Semaphore(0),
    "ThreadPoolExecutor": concurrent.futures.ThreadPoolExecutor(1),
}
from gevent import monkey
monkey.patch_all()
import gevent

def wait(kind, obj):
    if kind == "Event":
        obj.wait()
    elif kind == "Condition":
        with obj:
            obj.wait()
    elif kind == "Semaphore":
        obj.acquire()
    else:
        obj.get()

def wake(kind, obj):
    if kind == "Event":
        obj.set()
    elif kind == "Condition":
        with obj:
            obj.notify()
    elif kind == "Semaphore":
        obj.release()
    else:
        obj.put(1)

signal.signal(signal.SIGALRM, lambda *a: os._exit(3))  # the hub never got control back
signal.setitimer(signal.ITIMER_REAL, 1.0)
kind = sys.argv[1]
obj = made[kind]
if kind == "ThreadPoolExecutor":
    obj.submit(int).result()  # its worker is a greenlet, idle in the native queue's get()
else:
    waiter = gevent.spawn(wait, kind, obj)
    gevent.spawn_later(0.05, wake, kind, obj)
    waiter.join()
os._exit(0)
"""


@pytest.mark.parametrize(
    "kind, breaks",
    [
        ("Queue", False),
        ("Event", False),
        ("Condition", False),
        ("Semaphore", False),
        ("SimpleQueue", True),
        ("ThreadPoolExecutor", True),
    ],
)
def test_only_the_kinds_that_break_under_gevent_are_reported(
    kind: str, breaks: bool, tmp_path: Path
) -> None:
    # Why the probe reports a pre-patch SimpleQueue or executor, and not the others: under the
    # installed gevent, a greenlet that waits on the others lets the hub run.
    script = tmp_path / "behaviour.py"
    script.write_text(BEHAVIOUR)
    proc = subprocess.run(
        [sys.executable, str(script), kind], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == (3 if breaks else 0), proc.stderr
