"""`patchaudit bench --rate` (the open model), the client's CPU, and `--keep-alive both`.

The real client against real harness servers on 127.0.0.1, every run bounded by -n and
--max-time. The only assertions on timing are logical bounds (a stall of 0.5 s either is in the
tail or is not), never a speed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("hdrh", reason="the harness extra is not installed")

from patchaudit.harness import add_bench_arguments, run_load, start_server  # noqa: E402
from patchaudit.harness._options import BenchUsageError, options_from_args  # noqa: E402
from patchaudit.harness.engines import run_ab, run_wrk  # noqa: E402
from patchaudit.harness.results import render_table  # noqa: E402
from patchaudit.harness.stats import client_cpu, is_saturated  # noqa: E402

from .test_harness import HOST, _read_request, bench, raw_server, write_app  # noqa: E402

CORES = len(os.sched_getaffinity(0))
STALL_S = 0.5
# The server's request number (its readiness probe is the first) that blocks the whole process:
# an unpatched time.sleep in a greenlet stalls every other greenlet with it.
STALLING_APP = f"""
import itertools
from gevent import monkey

block = monkey.get_original("time", "sleep")
count = itertools.count(1)

def app(environ, start_response):
    if next(count) == 50:
        block({STALL_S})
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""
# Each request waits 50 ms without blocking the others: c connections carry at most c * 20/s.
SLOW_APP = """
import gevent

def app(environ, start_response):
    gevent.sleep(0.05)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def _assert_cpu(cpu: dict, processes: int, cores: int) -> None:
    assert len(cpu["processes"]) == processes and cpu["cores"] == cores
    assert all(0 <= share <= 1.05 for share in cpu["processes"]), cpu  # one thread each
    assert 0 <= cpu["total"] <= cores * 1.05 and cpu["wall_s"] > 0, cpu


# --------------------------------------------------------------------------------- thresholds


def test_saturation_and_client_bound_thresholds() -> None:
    assert not is_saturated(100, 95, late_sends=0, sent=100)
    assert is_saturated(100, 94.9, late_sends=0, sent=100)
    assert not is_saturated(100, 100, late_sends=1, sent=100)  # 1 % late: on schedule
    assert is_saturated(100, 100, late_sends=2, sent=100)
    assert not client_cpu([0.9], 1.0).bound and client_cpu([0.91], 1.0).bound
    assert client_cpu([0.2, 0.95], 1.0).bound  # one busy process holds back its share
    # Two processes pinned to one CPU: neither is above 90 % of a core, both together are.
    assert client_cpu([0.5, 0.5], 1.0, cpus={0}).bound
    assert client_cpu([0.5, 0.5], 1.0, cpus={0}).to_json()["cores"] == 1
    if CORES >= 2:  # wrk's threads: the share is of all the cores the process could use
        assert not client_cpu([1.7], 1.0, [2]).bound and client_cpu([1.9], 1.0, [2]).bound
    assert client_cpu([0.5, 0.25], 2.0).to_json() == {
        "processes": [0.25, 0.125], "cores": 2, "total": 0.375, "wall_s": 2.0,
    }  # fmt: skip


# ------------------------------------------------------------------------- the open model


def test_a_rate_run_reaches_its_target_and_says_open() -> None:
    with start_server("gevent", concurrency=20) as (host, port):
        result = run_load(host, port, "/", n=300, c=20, processes=2, max_time=30, rate=200)
        closed = run_load(host, port, "/", n=100, c=20, processes=2, max_time=30)
    row = result.to_json()
    assert (row["model"], row["target_rate"], row["completed"], row["failed"]) == (
        "open",
        200,
        300,
        0,
    )
    assert 190 <= row["achieved_rate"] <= 210, row  # 300 requests on a 1.5 s schedule
    assert row["saturated"] is False and row["late_sends"] <= 3 and row["error"] is None
    # The service time starts at the actual send, never before the intended one.
    for p in ("p50", "p99", "max"):
        assert row["service_ms"][p] <= row["latency_ms"][p]
    _assert_cpu(row["client_cpu"], processes=2, cores=min(2, CORES))
    assert isinstance(row["client_bound"], bool)
    closed_row = closed.to_json()
    assert (closed_row["model"], closed_row["target_rate"], closed_row["saturated"]) == (
        "closed",
        None,
        None,
    )
    assert closed_row["service_ms"] is None and closed_row["completed"] == 100


def test_a_stall_is_in_the_open_tail_and_hidden_from_the_closed_one(tmp_path: Path) -> None:
    app = write_app(tmp_path, STALLING_APP)
    with start_server("gevent", app, concurrency=50) as (host, port):
        closed = run_load(host, port, "/", n=400, c=2, processes=1, max_time=30)
    with start_server("gevent", app, concurrency=50) as (host, port):
        opened = run_load(host, port, "/", n=400, c=50, processes=1, max_time=30, rate=200)
    assert closed.completed == opened.completed == 400
    # Both saw the stall...
    assert closed.latency_ms["max"] >= STALL_S * 1000 * 0.9
    assert opened.latency_ms["max"] >= STALL_S * 1000 * 0.9
    # ...but the closed client stopped sending during it: 2 of its 400 requests waited, so its
    # p99 misses the stall, while the ~100 requests due during it are the open model's tail.
    assert closed.latency_ms["p99"] < STALL_S * 1000 / 2, closed.latency_ms
    assert opened.latency_ms["p99"] > STALL_S * 1000 * 0.8, opened.latency_ms
    assert opened.latency_ms["p99"] > 4 * closed.latency_ms["p99"]


def test_a_rate_above_capacity_completes_and_is_marked_saturated(tmp_path: Path) -> None:
    app = write_app(tmp_path, SLOW_APP)
    with start_server("gevent", app, concurrency=4) as (host, port):
        result = run_load(host, port, "/", n=120, c=4, processes=1, max_time=30, rate=400)
    assert (result.completed, result.failed, result.error) == (120, 0, None)
    assert result.model == "open" and result.saturated is True
    assert result.achieved_rate is not None and result.achieved_rate <= 4 / 0.05  # c / 50 ms
    assert result.late_sends is not None and result.late_sends > 100  # 4 connections, 120 due
    out = io.StringIO()
    from rich.console import Console

    render_table([result], Console(file=out, width=250, no_color=True))
    table = out.getvalue()
    assert "open model" in table and "target/s" in table and "svc p99 ms" in table
    assert f"saturated: {result.rps:,.0f} of 400 req/s" in table


def test_keep_alive_connections_closed_while_idle_are_reopened_not_failed() -> None:
    accepted: list[int] = []

    def closes_after_idle(conn: socket.socket, number: int) -> None:
        accepted.append(number)
        conn.settimeout(0.2)  # an idle timeout, as gunicorn's keepalive (2 s) has
        while True:
            try:
                if not _read_request(conn):
                    return  # the client closed it
            except TimeoutError:
                return  # closed while the client waits for its next send
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with raw_server(closes_after_idle) as port:
        # 2 connections at 5/s: each waits 0.4 s between its sends, longer than 0.2 s.
        result = run_load(HOST, port, "/", n=8, c=2, keep_alive=True, processes=1, rate=5)
    assert (result.completed, result.failed) == (8, 0), result.errors
    assert len(accepted) == 8  # every send found its connection closed and opened a new one


def test_max_time_bounds_a_rate_run() -> None:
    with start_server("gevent", concurrency=5) as (host, port):
        result = run_load(host, port, "/", n=10_000, c=5, processes=1, max_time=1.0, rate=50)
    assert result.model == "open" and result.error is not None
    assert result.error.startswith("stopped by --max-time (1s)"), result.error
    assert 0 < result.completed + result.failed < 100  # 50/s for 1 s, not 10,000


# ------------------------------------------------------------------------------ the command


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rate", "0"], "--rate values must be positive"),
        (["--rate", "-5"], "--rate values must be positive"),
        (["--rate=-5"], "--rate values must be positive"),
        (["--rate", "inf"], "--rate values must be positive"),
        (["--rate", "fast"], "--rate takes comma-separated requests per second, not 'fast'"),
        (["--rate", "100", "--engine", "ab"], "--rate needs --engine builtin: ab can only send"),
        (["--rate", "100", "--engine", "builtin,wrk"], "wrk can only send when an answer arrives"),
        (["--rate", "100", "-c", "5,10"], "with --rate, -c takes one value"),
        (["--keep-alive", "sometimes"], "--keep-alive takes on, off or both, not 'sometimes'"),
    ],
)
def test_bad_rates_are_one_line_usage_errors(args: list[str], message: str) -> None:
    result = bench(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def _options(*argv: str):
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return options_from_args(parser.parse_args(list(argv)))


def test_keep_alive_on_off_both_and_the_old_flag() -> None:
    for argv, expected in (
        ((), (False, False, None)),
        (("-k",), (True, False, None)),
        (("--keep-alive",), (True, False, None)),
        (("--keep-alive", "both"), (False, True, None)),
        (("--keep-alive", "off"), (False, False, None)),
        (("-k", "app.py:app"), (True, False, "app.py:app")),  # a bare -k before the app
        (("app.py", "-k"), (True, False, "app.py")),
    ):
        options = _options(*argv)
        assert (options.keep_alive, options.keep_alive_both, options.app) == expected, argv
    assert _options("--keep-alive", "both").keep_alive_modes == [False, True]
    with pytest.raises(BenchUsageError, match="not 'x.py'"):
        _options("app.py", "-k", "x.py")
    rated = _options("--rate", "50,100,50")
    assert rated.rates == [50.0, 100.0] and rated.concurrencies == [100]
    assert rated.points() == [(100, 50.0), (100, 100.0)]


def test_keep_alive_both_gives_both_rows_with_cpu() -> None:
    result = bench("--servers", "gevent", "-c", "2", "-n", "20", "--keep-alive", "both",
                   "--format", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [(r["keep_alive"], r["model"], r["completed"], r["failed"]) for r in runs] == [
        (False, "closed", 20, 0), (True, "closed", 20, 0),
    ]  # fmt: skip
    for run in runs:
        _assert_cpu(run["client_cpu"], processes=min(2, CORES), cores=min(2, CORES))
        assert isinstance(run["client_bound"], bool)
    assert "keep-alive off" in result.stderr and "keep-alive on" in result.stderr


@pytest.mark.slow  # a sweep of rates, both models
def test_a_rate_sweep_table_shows_each_rate_both_ways(tmp_path: Path) -> None:
    figure = tmp_path / "rates.svg"
    result = bench("--servers", "gevent", "--rate", "50,100", "-c", "5", "-n", "30",
                   "--keep-alive", "both", "--plot", str(figure))  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = result.stdout
    words = " ".join(table.split())  # the title wraps to the width
    assert "keep-alive off (a new connection per request" in words
    assert "keep-alive on (connections reused)" in words and "open model" in words
    rows = [line.split("│")[1:-1] for line in table.splitlines() if line.startswith("│ gevent")]
    cells = [[cell.strip() for cell in row] for row in rows]
    # server, engine, keep-alive, concurrency, target/s: every rate both ways, side by side
    assert [row[2:5] for row in cells] == [
        ["off", "5", "50"], ["on", "5", "50"], ["off", "5", "100"], ["on", "5", "100"],
    ]  # fmt: skip
    assert all(row[9].endswith("%") for row in cells)  # client CPU
    # the figure: the rates on the x axis, one line per keep-alive mode
    svg = figure.read_text()
    for text in ("target requests per second (open model, at most 5 in flight)",
                 "gevent, keep-alive", "gevent, new connections", "50", "100"):  # fmt: skip
        assert f"<!-- {text} -->" in svg, text
    assert "keep-alive on and off, builtin client -->" in svg  # the title


# -------------------------------------------------------------------------- ab and wrk's CPU


@pytest.mark.skipif(
    shutil.which("ab") is None or shutil.which("wrk") is None, reason="needs ab and wrk"
)
def test_ab_and_wrk_report_their_cpu() -> None:
    with start_server("gevent", concurrency=10) as (host, port):
        ab = run_ab(host, port, "/", 300, 10, False, 10, max_time=30)
        wrk = run_wrk(host, port, "/", 300, 10, False, 10, max_time=30, threads=2)
    assert ab.completed == 300 and wrk.completed >= 300
    _assert_cpu(ab.to_json()["client_cpu"], processes=1, cores=1)
    wrk_cpu = wrk.to_json()["client_cpu"]
    assert wrk_cpu["cores"] == min(2, CORES) and 0 <= wrk_cpu["total"] <= min(2, CORES) * 1.05
    assert ab.model == wrk.model == "closed"
