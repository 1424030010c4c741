"""`patchaudit bench --engine locust`: real locust masters and workers, on 127.0.0.1 only,
against the harness's real gevent server or a raw socket server that misbehaves on purpose.
Every run is bounded by -n and --max-time; every test checks that no process is left."""

from __future__ import annotations

import json
import os
import select
import shlex
import socket
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import pytest

from .conftest import REPO, assert_nothing_left, port_is_closed, processes_with, require

require("locust", "hdrh")

pytestmark = pytest.mark.slow  # real locust masters and workers

from patchaudit._exec import exec_command  # noqa: E402
from patchaudit._process import spawn  # noqa: E402
from patchaudit.harness import start_server  # noqa: E402
from patchaudit.harness._locust import PERCENTILE_NOTE, parse_summary, run_locust  # noqa: E402
from patchaudit.harness.stats import RunResult  # noqa: E402

from .test_harness import (  # noqa: E402
    OK_RESPONSE,
    RUN_KEYS,
    _read_request,
    bench,
    ctrl_c,
    raw_server,
    running_bench,
)

HOST = "127.0.0.1"
WORKER_PROMPT = "start another locust worker with: "


def _marked() -> tuple[str, dict[str, str]]:
    marker = f"PATCHAUDIT_TEST_{uuid.uuid4().hex}"
    return marker, {"PATCHAUDIT_TEST_MARKER": marker}


def _stderr_line(process: subprocess.Popen, text: str, seconds: float) -> str:
    """The first line of ``process``'s stderr containing ``text`` (fails after ``seconds``)."""
    deadline, pending = time.monotonic() + seconds, b""
    stream = process.stderr
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, f"stderr ended before {text!r}: {pending.decode(errors='replace')}"
        pending += chunk
        for line in pending.decode(errors="replace").splitlines():
            if text in line:
                return line
    raise AssertionError(f"no {text!r} on stderr within {seconds}s: {pending!r}")


def _closed_connections(port: int) -> int:
    """Connections to or from ``port`` in TIME_WAIT: requests made, seen from the kernel."""
    suffix = f":{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        count += state == "06" and (local.endswith(suffix) or remote.endswith(suffix))
    return count


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# ------------------------------------------------------------------------------ the runs


def test_two_local_workers_send_exactly_n_requests_with_the_json_schema() -> None:
    marker, env = _marked()
    result = bench(
        "--servers", "gevent", "--engine", "locust", "-c", "4", "-n", "300",
        "--workers-local", "2", "--format", "json", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["notes"] == {"locust": PERCENTILE_NOTE}
    assert document["machine"]["versions"]["locust"] == metadata.version("locust")
    (run,) = document["runs"]
    assert set(run) == RUN_KEYS
    assert (run["engine"], run["server"], run["concurrency"], run["keep_alive"]) == (
        "locust", "gevent", 4, False,
    )  # fmt: skip
    assert (run["requests"], run["completed"], run["failed"], run["error"]) == (300, 300, 0, None)
    assert set(run["errors"].values()) == {0}
    assert run["rps"] > 0 and run["duration_s"] > 0
    latency = run["latency_ms"]
    assert latency["p50"] <= latency["p90"] <= latency["p99"] and latency["max"] > 0
    assert all(float(latency[p]).is_integer() for p in ("p50", "p90", "p99"))  # locust's buckets
    # both workers' CPU over their share of the load, one core each at most
    cpu = run["client_cpu"]
    assert len(cpu["processes"]) == 2 and all(0 < share <= 1.05 for share in cpu["processes"])
    assert 0 < cpu["total"] <= cpu["cores"] * 1.05 and isinstance(run["client_bound"], bool)
    assert_nothing_left(marker)


def test_failures_are_classified_into_the_error_kinds_exactly() -> None:
    # Without -k every request is a new connection, so the accept number is the request's.
    def handle(conn, number: int) -> None:
        if number % 5 == 0:
            return  # closed without a response
        _read_request(conn)
        if number % 13 == 0:
            conn.recv(1)  # no response: held until the client gives up and closes
        elif number % 7 == 0:
            conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        elif number % 11 == 0:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\nhi")
        else:
            conn.sendall(OK_RESPONSE)

    with raw_server(handle) as port:
        result = run_locust(HOST, port, "/", 70, 2, False, 1, max_time=30, workers_local=2)
    # 14 multiples of 5; of 13, 4 less 65; of 7, 10 less 35 and 70; of 11, 6 less 55.
    assert result.errors == {
        "connect_refused": 0, "connect_timeout": 0, "reset": 14, "read_timeout": 4,
        "bad_status": 8, "short_body": 5, "other": 0,
    }  # fmt: skip
    assert (result.completed, result.failed, result.error) == (39, 31, None)


def test_a_closed_port_is_connect_refused_for_every_request() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        result = run_locust(HOST, port, "/", 20, 2, False, 5, max_time=30, workers_local=2)
    assert (result.completed, result.failed, result.errors["connect_refused"]) == (0, 20, 20)
    assert result.latency_ms == dict.fromkeys(("p50", "p90", "p99", "max"))


def test_keep_alive_reuses_one_connection_per_user() -> None:
    accepted: list[int] = []

    def handle(conn, number: int) -> None:
        accepted.append(number)
        while _read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    with raw_server(handle) as port:
        result = run_locust(HOST, port, "/", 90, 3, True, 10, max_time=30, workers_local=2)
    assert (result.completed, result.failed, result.keep_alive) == (90, 0, True)
    assert len(accepted) == 3


def test_max_time_stops_a_run_that_cannot_finish() -> None:
    with start_server("gevent", concurrency=4) as (host, port):
        started = time.monotonic()
        result = run_locust(host, port, "/", 10_000_000, 4, False, 10, max_time=2, workers_local=2)
    assert time.monotonic() - started < 20
    assert result.error == "stopped by --max-time (2s)"
    assert 0 < result.completed < 10_000_000 and result.failed == 0
    assert 1.5 <= result.duration_s <= 3.0


def test_the_printed_worker_command_starts_a_worker_that_joins(tmp_path: Path) -> None:
    marker, env = _marked()
    process = subprocess.Popen(
        [sys.executable, "-m", "patchaudit.harness", "--servers", "gevent", "--engine", "locust",
         "-c", "2", "-n", "200", "--workers-local", "1", "--expect-workers", "1",
         "--print-worker-command", "--timeout", "30", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    worker = None
    try:
        line = _stderr_line(process, WORKER_PROMPT, 30)
        command = shlex.split(line.split(WORKER_PROMPT, 1)[1])
        master_port = command[command.index("--master-port") + 1]
        assert command == [
            "locust", "--worker", "--master-host", HOST, "--master-port", master_port, "-f", "-",
        ]  # fmt: skip
        # The printed command, run by the locust of this environment (it may not be on PATH);
        # it downloads the locustfile into its temporary folder.
        command[0] = str(Path(sys.executable).with_name("locust"))
        with open(tmp_path / "worker.err", "wb") as err:
            worker = spawn(
                exec_command(command), env={**os.environ, "TMPDIR": str(tmp_path)},
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, deadline=60,
            )  # fmt: skip
        stdout, stderr = process.communicate(timeout=60)
        assert worker.wait(timeout=15) == 0  # the master told it to quit
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if worker is not None:
            worker.kill()
    assert process.returncode == 0, stderr
    (run,) = json.loads(stdout)["runs"]
    # The master starts only when both workers are there, and quits when both did their 100.
    assert (run["completed"], run["failed"], run["error"]) == (200, 0, None)
    assert "Got quit message from master" in (tmp_path / "worker.err").read_text()
    assert (tmp_path / "patchaudit_locustfile.py").is_file()
    assert_nothing_left(marker)


# ------------------------------------------------------------------------------ bad input


def test_missing_locust_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    # A real interpreter without locust: this environment's packages minus locust's own, on a
    # path of links (-S: no site-packages of its own, so nothing else brings it back).
    site = Path(metadata.distribution("locust").locate_file(""))
    farm = tmp_path / "site"
    farm.mkdir()
    for entry in site.iterdir():
        if entry.name != "locust" and not entry.name.startswith("locust-"):
            (farm / entry.name).symlink_to(entry)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(farm)])}
    probe = [sys.executable, "-S", "-c", "import importlib.util as u; print(u.find_spec('locust'))"]
    assert subprocess.run(probe, capture_output=True, text=True, env=env).stdout == "None\n"
    result = subprocess.run(
        [sys.executable, "-S", "-m", "patchaudit.harness", "--engine", "locust", "-c", "2",
         "-n", "2"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "patchaudit: error: locust is not installed: `pip install 'patchaudit[harness]'` "
        "(or use the built-in client, --engine builtin)\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers-local", "2"], "--workers-local only applies to --engine locust"),
        (["--engine", "locust", "-c", "2", "--workers-local", "2", "--expect-workers", "1"],
         "-c 2 is less than the 3 locust workers: each worker needs at least one user"),
        (["--engine", "locust", "--master-bind", "127.0.0.1:x"], "the port must be a number"),
        (["--engine", "locust", "--workers-local", "0"], "--workers-local 0 needs"),
    ],
)  # fmt: skip
def test_locust_usage_errors_are_one_line(args: list[str], message: str) -> None:
    result = bench(*args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_master_address_in_use_is_refused_before_anything_starts() -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        bind = f"{HOST}:{port}"
        result = bench("--engine", "locust", "-c", "2", "-n", "2", "--master-bind", bind)
    assert result.returncode == 2
    assert result.stderr == (
        f"patchaudit: error: --master-bind {HOST}:{port}: the master cannot listen there "
        "(Address already in use)\n"
    )


def test_a_worker_that_never_connects_fails_the_run_and_leaves_nothing() -> None:
    marker, env = _marked()
    started = time.monotonic()
    result = bench(
        "--servers", "gevent", "--engine", "locust", "-c", "2", "-n", "10", "--timeout", "6",
        "--workers-local", "1", "--expect-workers", "1", "--format", "json", env=env,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    assert (run["completed"], run["failed"]) == (0, 0)
    assert run["error"] == "only 1 of 2 locust workers connected within 6s (--timeout)"
    assert "Traceback" not in result.stderr
    assert_nothing_left(marker)


def test_ctrl_c_keeps_what_was_measured_and_leaves_no_process() -> None:
    marker, env = _marked()
    args = ("--servers", "gevent", "--engine", "locust", "-c", "4", "-n", "10000000",
            "--max-time", "60", "--workers-local", "2")  # fmt: skip
    with running_bench(*args, env=env) as process:
        line = _stderr_line(process, "engine locust", 30)
        port = int(line.split(f"{HOST}:")[1].split(",")[0])
        # bench, the server and three locust processes, each under its supervisor
        deadline = time.monotonic() + 30
        while len(processes_with(marker)) < 9 and time.monotonic() < deadline:
            time.sleep(0.1)
        started = processes_with(marker)
        assert len(started) >= 9, started
        while _closed_connections(port) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the load is running, whatever the machine's speed
        run = ctrl_c(process)
    assert run["engine"] == "locust"
    assert run["completed"] > 0 and run["latency_ms"]["max"] is not None
    assert [pid for pid in started if _alive(pid)] == []
    assert_nothing_left(marker)
    assert port_is_closed(port)


def test_a_summary_maps_locust_messages_to_the_error_kinds() -> None:
    summary = {
        "requests": 10, "failures": 4, "percentiles_ms": {"p50": 3, "p90": 5, "p99": 9},
        "max_ms": 9.4321, "start_time": 100.0, "last_request_time": 102.0,
        "errors": {"CatchResponseError('patchaudit:reset')": 3, "ValueError('boom')": 1},
    }  # fmt: skip
    result = parse_summary(summary, RunResult("gevent", "patched", "locust", 2, 10, False))
    assert (result.completed, result.failed, result.rps, result.duration_s) == (6, 4, 3.0, 2.0)
    assert result.errors["reset"] == 3 and result.errors["other"] == 1
    assert result.latency_ms == {"p50": 3.0, "p90": 5.0, "p99": 9.0, "max": 9.432}
