"""`patchaudit bench` (patchaudit.harness): servers, the load client's accounting, the engines,
the results, and every fault the issue lists. All traffic stays on 127.0.0.1, every run is
bounded by -n and a wall-clock limit.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("hdrh", reason="the harness extra is not installed")

from patchaudit._system import FD_MARGIN  # noqa: E402
from patchaudit.harness import (  # noqa: E402
    ERROR_KINDS,
    SERVERS,
    RunResult,
    ServerError,
    fd_budget,
    run_load,
    start_server,
)
from patchaudit.harness._worker import _Failure, read_response  # noqa: E402
from patchaudit.harness.engines import parse_ab, parse_wrk, run_ab, run_wrk  # noqa: E402
from patchaudit.harness.limits import fd_problem  # noqa: E402
from patchaudit.harness.results import to_document  # noqa: E402

from .conftest import port_is_closed  # noqa: E402

HOST = "127.0.0.1"
RUN_KEYS = {
    "server", "mode", "engine", "concurrency", "requests", "keep_alive", "completed", "failed",
    "errors", "rps", "latency_ms", "duration_s", "error", "model", "target_rate", "achieved_rate",
    "saturated", "late_sends", "service_ms", "client_cpu", "client_bound",
}  # fmt: skip


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 60, **kwargs):
    """`patchaudit bench ARGS` in a subprocess (python -m patchaudit.harness)."""
    return subprocess.run(
        [sys.executable, "-m", "patchaudit.harness", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def write_app(folder: Path, body: str) -> str:
    (folder / "benchapp.py").write_text(body)
    return f"{folder / 'benchapp.py'}:app"


@contextmanager
def raw_server(handle: Callable[[socket.socket, int], None]) -> Iterator[int]:
    """A tiny threaded TCP server: ``handle(connection, accept_number)`` for each connection."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(512)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        accepted = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted += 1
            threading.Thread(target=_guarded, args=(handle, conn, accepted), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _guarded(handle, conn: socket.socket, number: int) -> None:
    try:
        handle(conn, number)
    except OSError:
        pass
    finally:
        conn.close()


def _read_request(conn: socket.socket) -> bytes:
    """The request's head; empty when the client closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


# ------------------------------------------------------------------------ units, no network


def test_fd_budget_counts_one_descriptor_per_connection_plus_margin() -> None:
    needed, soft, hard = fd_budget(1000)
    assert needed == 1000 + FD_MARGIN
    assert (soft, hard) == tuple(
        min(v, 2**31 - 1) for v in resource.getrlimit(resource.RLIMIT_NOFILE)
    )
    assert fd_problem(1) is None
    message = fd_problem(10**9)
    assert message is not None and "ulimit -n" in message and "\n" not in message


def _fake_recv(*chunks: bytes) -> Callable[[], bytes]:
    parts = list(chunks)
    return lambda: parts.pop(0) if parts else b""


def test_read_response_checks_length_chunks_and_status() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert read_response(_fake_recv(head + b"01234", b"56789"), False) == (True, False, 49)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    good, reusable, _ = read_response(_fake_recv(chunked, b"5\r\nhello\r\n0\r\n\r\n"), True)
    assert good and reusable
    error = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
    assert read_response(_fake_recv(error), True)[0] is False
    until_close = read_response(_fake_recv(b"HTTP/1.0 200 OK\r\n\r\nabc", b"def"), True)
    assert until_close == (True, False, 25)
    for chunks, kind in (
        ((), "reset"),
        ((b"HTTP/1.1 200 OK\r\nContent-Le",), "reset"),
        ((head + b"0123",), "short_body"),
        ((chunked + b"5\r\nhel",), "short_body"),
        ((b"SSH-2.0-OpenSSH\r\n\r\n",), "bad_status"),
    ):
        with pytest.raises(_Failure) as caught:
            read_response(_fake_recv(*chunks), False)
        assert caught.value.kind == kind, chunks


AB_OUTPUT = """\
Concurrency Level:      10
Time taken for tests:   2.000 seconds
Complete requests:      1000
Failed requests:        7
   (Connect: 1, Receive: 2, Length: 3, Exceptions: 1)
Non-2xx responses:      4
Requests per second:    500.00 [#/sec] (mean)

Percentage of the requests served within a certain time (ms)
  50%      8
  66%      9
  90%     12
  99%     30
 100%     45 (longest request)
"""


def test_ab_and_wrk_reports_become_rows() -> None:
    row = parse_ab(AB_OUTPUT, RunResult("gevent", "patched", "ab", 10, 1000, False))
    assert row.errors == {
        "connect_refused": 1, "connect_timeout": 0, "reset": 2, "read_timeout": 0,
        "bad_status": 4, "short_body": 3, "other": 1,
    }  # fmt: skip
    assert (row.completed, row.failed, row.duration_s) == (993, 11, 2.0)
    assert row.latency_ms == {"p50": 8.0, "p90": 12.0, "p99": 30.0, "max": 45.0}
    line = "PATCHAUDIT_WRK 1000 2000000 1 2 3 4 5 800 1200 3000 4500\n"
    row = parse_wrk(f"Running 2s test\n{line}", RunResult("gevent", "patched", "wrk", 10, 1000, 1))
    assert (row.completed, row.failed, row.rps) == (996, 15, 498.0)
    assert row.errors["reset"] == 5 and row.errors["read_timeout"] == 5
    assert row.latency_ms == {"p50": 0.8, "p90": 1.2, "p99": 3.0, "max": 4.5}


def test_json_document_has_exactly_the_documented_schema() -> None:
    run = RunResult("gevent", "patched", "builtin", 10, 100, False, completed=100, rps=1.0)
    document = json.loads(json.dumps(to_document([run])))
    assert set(document) == {"version", "machine", "runs"} and document["version"] == 1
    assert {"cpus", "python", "nofile", "sysctl", "versions"} <= set(document["machine"])
    (row,) = document["runs"]
    assert set(row) == RUN_KEYS
    assert set(row["errors"]) == set(ERROR_KINDS)
    assert set(row["latency_ms"]) == {"p50", "p90", "p99", "max"}


# -------------------------------------------------------------------------------- servers


@pytest.mark.parametrize("kind", SERVERS)
def test_server_lifecycle(kind: str) -> None:
    with start_server(kind, concurrency=10, grace=1.0, workers=2) as (host, port):
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as response:
            body = response.read()
        assert response.status == 200 and b"Static Content" in body
        assert int(response.headers["Content-Length"]) == len(body)
    assert port_is_closed(port)


def test_fixed_port_already_in_use_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} .* already in use"):
            with start_server("gevent", port=port):
                pass
        result = bench("--servers", "threaded", "-c", "2", "-n", "4", "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert "already in use" in result.stderr and "Traceback" not in result.stderr


def test_server_that_fails_to_start_shows_its_stderr(tmp_path: Path) -> None:
    app = write_app(tmp_path, "raise ImportError('the database driver xyzzy is missing')\n")
    with pytest.raises(ServerError, match="xyzzy is missing"):
        with start_server("gevent", app):
            pass


def test_server_that_hangs_on_shutdown_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n",
    )
    with start_server("gevent", app, grace=1.0) as (_host, port):
        stopping = time.monotonic()
    waited = time.monotonic() - stopping
    assert 1.0 <= waited < 8.0
    assert port_is_closed(port)


# ------------------------------------------------------------------- the client's accounting


def test_a_server_dropping_every_tenth_connection_shows_exactly_those_failures() -> None:
    def handle(conn: socket.socket, number: int) -> None:
        if number % 10 == 0:
            return  # closed without a response
        _read_request(conn)
        conn.sendall(OK_RESPONSE)

    with raw_server(handle) as port:
        result = run_load(HOST, port, "/", n=100, c=5, processes=2, timeout=10, max_time=60)
    assert (result.completed, result.failed) == (90, 10), result
    assert result.errors["reset"] + result.errors["short_body"] == 10, result.errors
    assert result.latency_ms["p50"] is not None and result.error is None


def test_timeouts_refusals_and_short_bodies_are_classified() -> None:
    def silent(conn: socket.socket, number: int) -> None:
        _read_request(conn)
        time.sleep(3)

    with raw_server(silent) as port:
        result = run_load(HOST, port, "/", n=4, c=2, processes=1, timeout=0.5, max_time=20)
    assert result.errors["read_timeout"] == 4 and result.failed == 4, result.errors

    def short(conn: socket.socket, number: int) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")

    with raw_server(short) as port:
        result = run_load(HOST, port, "/", n=6, c=2, processes=1, timeout=5, max_time=20)
    assert result.errors["short_body"] == 6, result.errors

    with socket.socket() as unused:
        unused.bind((HOST, 0))
        closed_port = unused.getsockname()[1]
    result = run_load(HOST, closed_port, "/", n=5, c=1, processes=1, timeout=5, max_time=20)
    assert result.errors["connect_refused"] == 5 and result.completed == 0


def test_slow_responses_are_exactly_the_timeouts_and_never_in_the_latencies() -> None:
    def every_third_is_slow(conn: socket.socket, number: int) -> None:
        _read_request(conn)
        time.sleep(1.0 if number % 3 == 0 else 0.02)
        conn.sendall(OK_RESPONSE)

    with raw_server(every_third_is_slow) as port:
        result = run_load(HOST, port, "/", n=60, c=20, processes=2, timeout=0.4, max_time=30)
    assert (result.completed, result.failed, result.errors["read_timeout"]) == (40, 20, 20)
    assert result.latency_ms["max"] <= 400


def test_an_app_that_raises_is_counted_as_bad_status(tmp_path: Path) -> None:
    app = write_app(tmp_path, "def app(environ, start_response):\n    raise RuntimeError('boom')\n")
    with start_server("gevent", app, concurrency=4) as (host, port):
        result = run_load(host, port, "/", n=20, c=4, processes=2, timeout=10, max_time=30)
    assert (result.completed, result.failed, result.errors["bad_status"]) == (0, 20, 20)


def test_keep_alive_reuses_connections() -> None:
    def handle(conn: socket.socket, number: int) -> None:
        for _ in range(1000):
            _read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    connections: list[int] = []

    def counting(conn: socket.socket, number: int) -> None:
        connections.append(number)
        handle(conn, number)

    with raw_server(counting) as port:
        result = run_load(HOST, port, "/", n=60, c=3, keep_alive=True, processes=1, max_time=20)
    assert (result.completed, result.failed, result.keep_alive) == (60, 0, True)
    assert len(connections) == 3  # one per concurrent connection, not one per request


# ------------------------------------------------------------------------------ the command


def test_a_small_sweep_prints_the_json_schema_and_plots(tmp_path: Path) -> None:
    figure = tmp_path / "sweep.png"
    args = ["--servers", "gevent,threaded", "-c", "2,4", "-n", "40", "--format", "json"]
    result = bench(*args, *(["--plot", str(figure)] if _has_matplotlib() else []))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [(r["server"], r["mode"], r["concurrency"]) for r in document["runs"]] == [
        ("gevent", "patched", 2), ("gevent", "patched", 4),
        ("threaded", "unpatched", 2), ("threaded", "unpatched", 4),
    ]  # fmt: skip
    for row in document["runs"]:
        assert set(row) == RUN_KEYS
        assert (row["completed"], row["failed"], row["keep_alive"]) == (40, 0, False)
        assert row["engine"] == "builtin" and row["rps"] > 0 and row["error"] is None
    if _has_matplotlib():
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_plot_without_matplotlib_is_one_line() -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from patchaudit.harness.__main__ import main\n"
        "sys.exit(main(['-c', '2', '-n', '2', '--plot', 'out.png']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "matplotlib" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["-c", "100", "-n", "10"], "less than the concurrency"),
        (["--servers", "tornado"], "unknown server 'tornado'"),
        (["-c", "ten"], "comma-separated integers"),
        (["--plot", "figure.pdf"], ".png or .svg"),
        (["-n", "0"], "at least 1"),
        (["--max-time", "0"], "positive"),
        (["--engine", ""], "--engine needs at least one name"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    result = bench(*args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_concurrency_above_the_descriptor_limit_is_refused() -> None:
    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = bench("-c", "1000", "-n", "1000", preexec_fn=lower_limit)
    assert result.returncode == 2
    assert "limit is 256" in result.stderr and "ulimit -n" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("engine, hint", [("ab", "apache2-utils"), ("wrk", "apt-get install wrk")])
def test_missing_engine_is_one_line(engine: str, hint: str, tmp_path: Path) -> None:
    result = bench("--engine", engine, "-c", "2", "-n", "2", env={"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert hint in result.stderr and result.stderr.count("\n") == 1


def _marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@contextmanager
def running_bench(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`patchaudit bench ARGS --format json` started in the background; killed if still
    running when the block ends (a failed assertion must not leave it behind)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "patchaudit.harness", *args, "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def ctrl_c(process: subprocess.Popen) -> dict:
    """Ctrl-C a running bench: it exits 130 with its partial results and no traceback; the
    interrupted run it printed."""
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "partial results" in stderr
    (run,) = json.loads(stdout)["runs"]
    assert run["error"] == "interrupted"
    return run


def test_ctrl_c_prints_partial_results_and_leaves_nothing_behind() -> None:
    marker = f"PATCHAUDIT_TEST_{uuid.uuid4().hex}"
    env = {"PATCHAUDIT_TEST_MARKER": marker}
    args = ("--servers", "gevent,threaded", "-c", "10", "-n", "10000000", "--max-time", "60")
    with running_bench(*args, env=env) as process:
        line = process.stderr.readline()  # "patchaudit bench: gevent (patched) on 127.0.0.1:N"
        assert "127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split(",")[0])
        time.sleep(1.5)
        assert len(_marked_processes(marker)) >= 3  # bench, server, client processes
        run = ctrl_c(process)
    assert run["completed"] > 0
    assert _marked_processes(marker) == []
    assert port_is_closed(port)


# ------------------------------------------------------------------- external engines, if any


@pytest.mark.skipif(shutil.which("ab") is None, reason="ab (apache2-utils) is not installed")
def test_ab_engine_measures_the_same_server() -> None:
    with start_server("gevent", concurrency=10) as (host, port):
        result = run_ab(host, port, "/", 200, 10, False, 10, max_time=30)
    assert (result.completed, result.failed, result.engine) == (200, 0, "ab")
    assert result.rps > 0 and result.latency_ms["max"] is not None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_engine_stops_after_n_requests() -> None:
    with start_server("gevent", concurrency=10) as (host, port):
        started = time.monotonic()
        result = run_wrk(host, port, "/", 200, 10, False, 10, max_time=30)
    assert time.monotonic() - started < 15  # stopped after -n, not at --max-time
    assert result.completed >= 200 and result.failed == 0 and result.engine == "wrk"
