"""The locustfile of `patchaudit bench --engine locust`; bench fills in SETTINGS and writes the
result to its scratch folder, and workers elsewhere download it from the master (``-f -``).

Never imported by patchaudit (locust patches everything when it is imported); only locust runs
it, so it needs nothing but locust and the standard library.

* **Exact count.** Locust can only stop on a duration, so each worker takes a share of
  ``requests`` by its index (the master numbers workers as they connect), its users draw from
  that share, and the worker reports ``patchaudit_done`` once every request of the share has
  finished, after sending its last statistics. The master quits when every worker has.
* **Failures** are classified here, where the exception is known, into the kinds of
  ``patchaudit.harness.stats.ERROR_KINDS``, and reported as ``patchaudit:KIND``.
* **Summary.** On quitting, the master writes its totals as JSON to ``summary`` (the schema is
  read by ``patchaudit.harness._locust.parse_summary``). On Ctrl-C it first asks the workers for
  their unsent statistics (they send every 3 s), so the summary has what was measured.
"""

import json
import os
import resource
import time
import traceback
from errno import ETIMEDOUT

import gevent
import geventhttpclient.client
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

SETTINGS: dict = {}  # PATCHAUDIT_SETTINGS: this line is replaced by the generated values

DONE, FLUSH = "patchaudit_done", "patchaudit_flush"
FLUSH_WAIT = 1.0  # seconds the master waits for the workers' last statistics on Ctrl-C
# geventhttpclient sends a GET again, up to twice, when the connection closes before the
# response: that would hide the very failures bench counts (ab and the built-in client never
# retry). max_retries = 0 does not reach this retry; its one gate does.
geventhttpclient.client._may_retry_after_send_error = lambda method: False
_share = {"size": 0, "issued": 0, "finished": 0, "cpu": 0.0, "started": 0.0}
_done_workers: set = set()
_worker_cpu: dict = {}  # index -> [CPU seconds, wall seconds] of the worker's load


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _kind(response, error) -> str:
    """Which of bench's error kinds ``error`` (or a bad status) is."""
    status = getattr(response, "status_code", 0) or 0
    if status and not 200 <= status < 400:
        return "bad_status"  # locust raises LocustBadStatusCode for it
    if error is None:
        if not status:
            return "other"
        # geventhttpclient takes a close before Content-Length bytes as the end of the body
        length = (response.headers or {}).get("content-length")
        if length is not None and length.isdigit() and int(length) != len(response.content or b""):
            return "short_body"
        return ""
    while getattr(error, "original", None) is not None:
        error = error.original  # geventhttpclient's RetriesExceeded wraps timeouts (no retry)
    if isinstance(error, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(error, TimeoutError | gevent.Timeout) or getattr(error, "errno", 0) == ETIMEDOUT:
        # geventhttpclient raises the same "timed out" for the connect and for the response:
        # the frames tell them apart (its pool connects in _create_socket).
        frames = {frame.name for frame in traceback.extract_tb(error.__traceback__)}
        return "connect_timeout" if "_create_socket" in frames else "read_timeout"
    if status:  # the head arrived, the body did not
        return "short_body"
    if isinstance(error, ConnectionError | EOFError) or "closed" in str(error).lower():
        return "reset"
    return "other"


class PatchauditBench(FastHttpUser):
    host = SETTINGS.get("host")
    wait_time = constant(0)
    network_timeout = connection_timeout = SETTINGS.get("timeout", 30.0)
    max_retries = 0
    concurrency = 1

    @task
    def get(self) -> None:
        if _share["issued"] >= _share["size"]:
            raise StopUser()
        _share["issued"] += 1
        headers = {} if SETTINGS.get("keep_alive") else {"Connection": "close"}
        with self.client.get(
            SETTINGS["path"], headers=headers, allow_redirects=False, catch_response=True
        ) as response:
            kind = _kind(response, getattr(response, "error", None))
            if kind:
                response.failure(f"patchaudit:{kind}")
            else:
                response.success()
        if not SETTINGS.get("keep_alive"):
            # A server may close without saying so (gevent's pywsgi): never reuse the socket.
            self.client.client.close()
        _share["finished"] += 1
        if _share["finished"] == _share["size"]:
            _report_done(self.environment)


def _send_stats(environment) -> None:
    """What the worker sends every 3 s, now (locust's own report, through its public event)."""
    data: dict = {}
    environment.events.report_to_master.fire(client_id=environment.runner.client_id, data=data)
    environment.runner.send_message("stats", data)


def _report_done(environment) -> None:
    _send_stats(environment)  # the last statistics, before the master quits
    # its CPU over its share of the load (not locust's start-up), for bench's client-bound check
    cpu = [_cpu_seconds() - _share["cpu"], time.monotonic() - _share["started"]]
    environment.runner.send_message(DONE, {"index": environment.runner.worker_index, "cpu": cpu})


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        workers, index, requests = SETTINGS["workers"], runner.worker_index, SETTINGS["requests"]
        size = requests // workers + (1 if index < requests % workers else 0)
        _share.update(size=size if 0 <= index < workers else 0, issued=0, finished=0)
        _share.update(cpu=_cpu_seconds(), started=time.monotonic())
        if _share["size"] == 0:
            _report_done(environment)


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):

        def done(environment, msg, **_kwargs) -> None:
            index = msg.data["index"]
            if 0 <= index < SETTINGS["workers"]:
                _done_workers.add(index)
                _worker_cpu[index] = msg.data.get("cpu")
            if len(_done_workers) == SETTINGS["workers"]:
                gevent.spawn(runner.quit)  # not from this greenlet, which quit() kills

        runner.register_message(DONE, done)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(FLUSH, lambda environment, msg, **_kwargs: _send_stats(environment))


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs) -> None:
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    finished = len(_done_workers) == SETTINGS["workers"]
    if not finished and any(not greenlet.dead for greenlet in runner.greenlet):
        runner.send_message(FLUSH)  # still connected (Ctrl-C): collect what is unsent
        gevent.sleep(FLUSH_WAIT)
    total = runner.stats.total
    errors: dict = {}
    for error in runner.stats.errors.values():
        errors[str(error.error)] = errors.get(str(error.error), 0) + error.occurrences
    summary = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "errors": errors,
        "percentiles_ms": {
            f"p{round(p * 100)}": total.get_response_time_percentile(p) for p in (0.5, 0.9, 0.99)
        },
        "max_ms": total.max_response_time,
        "start_time": total.start_time,
        "last_request_time": total.last_request_timestamp,
        "workers": SETTINGS["workers"],
        "workers_done": len(_done_workers),
        "workers_cpu": [cpu for _, cpu in sorted(_worker_cpu.items()) if cpu and cpu[1] > 0],
    }
    path = SETTINGS["summary"]
    with open(path + ".tmp", "w") as handle:
        json.dump(summary, handle)
    os.replace(path + ".tmp", path)  # whole or absent, however the master is stopped
