"""`--engine ab|wrk`: the same runs driven by ApacheBench or wrk, parsed into the same rows.

ab is the post's client (``ab -n N -c C -r``). wrk runs for a duration, so a Lua script counts
responses per thread, prints a marker when its share is done, and we stop wrk with SIGINT once
every thread has (wrk then prints its summary through the script's ``done`` hook).

Both run under a supervisor like every child of bench (``_exec.py`` calls ``supervise()`` and then
execs the tool), so they die with bench however bench dies.
"""

from __future__ import annotations

import math
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .._exec import exec_command
from .._process import Child, Interrupted, group_parents, spawn
from .client import INTERRUPT_GRACE, STOP_SLACK, LoadInterrupted, signal_of
from .stats import ERROR_KINDS, ClientCpu, RunResult, client_cpu, proc_cpu_seconds

INSTALL_HINT = {
    "ab": "ApacheBench (`ab`) not found on PATH: install it (Debian/Ubuntu: "
    "`apt-get install apache2-utils`) or use the built-in client (--engine builtin)",
    "wrk": "wrk not found on PATH: install it (Debian/Ubuntu: `apt-get install wrk`) "
    "or use the built-in client (--engine builtin)",
}


class EngineMissing(Exception):
    """The external load generator is not installed; the message says how to get it."""


def find_engine(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EngineMissing(INSTALL_HINT[name])
    return path


def _empty_errors() -> dict[str, int]:
    return dict.fromkeys(ERROR_KINDS, 0)


class ProgramCpu:
    """The CPU of a load generator run under ``_exec.py`` (ab, wrk): sampled from /proc while it
    runs, since its parent is its supervisor, not us. The last sample is at most one read tick
    (0.1 s) before it exits; both the CPU and the wall time count from the exec wrapper's start.
    """

    def __init__(self, cores: int = 1, cpus: set[int] | None = None) -> None:
        self.cores = cores
        self.cpus = cpus
        self.child: Child | None = None
        self.pid: int | None = None
        self.started = self.last_at = time.monotonic()
        self.seconds = 0.0

    def attach(self, child: Child) -> None:
        self.child = child
        self.started = self.last_at = time.monotonic()

    def sample(self) -> None:
        if self.child is None:
            return
        if self.pid is None:  # the program is the supervisor's child, in its group
            parents = group_parents(self.child.pid)
            self.pid = next((pid for pid, ppid in parents.items() if ppid == self.child.pid), None)
            if self.pid is None:
                return
        seconds = proc_cpu_seconds(self.pid)
        if seconds is not None:
            self.seconds, self.last_at = seconds, time.monotonic()

    def result(self) -> ClientCpu | None:
        if self.pid is None:
            return None
        return client_cpu([self.seconds], self.last_at - self.started, [self.cores], self.cpus)


# ----------------------------------------------------------------------------------- ab


def ab_command(
    url: str, n: int, c: int, keep_alive: bool, timeout: float, max_time: float
) -> list[str]:
    # -r: keep going on socket errors (ab aborts on the first one otherwise). -t before -n:
    # -t alone implies -n 50000, and a later -n overrides that.
    command = [find_engine("ab"), "-q", "-r", "-s", str(max(1, math.ceil(timeout)))]
    command += ["-t", str(max(1, math.ceil(max_time))), "-n", str(n), "-c", str(c)]
    if keep_alive:
        command.append("-k")
    return [*command, url]


def parse_ab(text: str, result: RunResult) -> RunResult:
    """Fill ``result`` from ab's report (what was printed, even if ab stopped early)."""

    def number(pattern: str, default: float = 0.0) -> float:
        match = re.search(pattern, text)
        return float(match.group(1)) if match else default

    complete = int(number(r"Complete requests:\s+(\d+)"))
    errors = _empty_errors()
    failures = re.search(
        r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", text
    )
    if failures:
        connect, receive, length, exceptions = (int(x) for x in failures.groups())
        errors["connect_refused"] = connect  # ab cannot tell refused from timed out
        errors["reset"] = receive
        errors["short_body"] = length  # ab compares with the first response's length
        errors["other"] = exceptions
    errors["reset"] += int(number(r"Write errors:\s+(\d+)"))
    errors["bad_status"] = int(number(r"Non-2xx responses:\s+(\d+)"))
    result.errors = errors
    result.failed = sum(errors.values())
    # ab counts a request whose body had the wrong length as complete; we do not.
    result.completed = max(0, complete - errors["short_body"] - errors["bad_status"])
    result.duration_s = number(r"Time taken for tests:\s+([\d.]+) seconds")
    result.rps = result.completed / result.duration_s if result.duration_s else 0.0
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.MULTILINE))
    if result.completed and percentiles:
        result.latency_ms = {
            "p50": _float(percentiles.get("50")),
            "p90": _float(percentiles.get("90")),
            "p99": _float(percentiles.get("99")),
            "max": _float(percentiles.get("100")),
        }
    return result


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def run_ab(
    host: str,
    port: int,
    path: str,
    n: int,
    c: int,
    keep_alive: bool,
    timeout: float,
    *,
    max_time: float = 300.0,
    cpus: set[int] | None = None,
    server: str = "",
    mode: str = "",
) -> RunResult:
    command = ab_command(f"http://{host}:{port}{path}", n, c, keep_alive, timeout, max_time)
    result = RunResult(server, mode, "ab", c, n, keep_alive, port=port)
    started = time.monotonic()
    usage = ProgramCpu(cpus=cpus)  # ab is one single-threaded process
    stdout, stderr, interrupted = _run(command, cpus, max_time, lambda _line: False, usage)
    parse_ab(stdout, result)
    result.client_cpu = usage.result()
    if "Complete requests" not in stdout:
        # ab gives up at the first timeout, -r or not, and prints only "Total of N requests
        # completed": keep that count, with our own clock for the rate.
        total = re.search(r"Total of (\d+) requests completed", stdout + stderr)
        result.completed = int(total.group(1)) if total else 0
        result.duration_s = time.monotonic() - started
        result.rps = result.completed / result.duration_s if result.duration_s else 0.0
        reason = next((line for line in stderr.splitlines() if "apr_" in line), _last_line(stderr))
        result.error = f"ab gave up after {result.completed:,} requests: {reason or 'no report'}"
    elif not interrupted and result.completed + result.failed < n:
        if result.duration_s >= max_time - 0.5:
            result.error = f"stopped by --max-time ({max_time:g}s)"
        else:  # e.g. "apr_pollset_poll: The timeout specified has expired (70007)"
            result.error = _last_line(stderr) or f"ab stopped after {result.completed} requests"
    if interrupted is not None:
        result.error = "interrupted"
        raise LoadInterrupted(result, interrupted)
    return result


# ---------------------------------------------------------------------------------- wrk

_WRK_SCRIPT = """
local index = 0
local limits = {%(limits)s}
function setup(thread)
  index = index + 1
  thread:set("limit", limits[index])
end
local count = 0
function response(status, headers, body)
  count = count + 1
  if count == limit then
    io.write("PATCHAUDIT_THREAD_DONE\\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("PATCHAUDIT_WRK %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def parse_wrk(text: str, result: RunResult, silent_close: bool = False) -> RunResult:
    """Fill ``result`` from the line our ``done`` hook printed.

    ``silent_close``: the server closes after each response without saying
    ``Connection: close`` (gevent's pywsgi), so wrk sends the next request on a closed socket
    and counts a read/write error for every response. Those are not failed requests.
    """
    match = re.search(r"^PATCHAUDIT_WRK ((?:\d+ ?){11})$", text, re.MULTILINE)
    if not match:
        result.error = "wrk printed no summary"
        return result
    requests, duration_us, connect, read, write, status, timeout, p50, p90, p99, peak = (
        int(x) for x in match.group(1).split()
    )
    errors = _empty_errors()
    errors["connect_refused"] = connect  # wrk cannot tell refused from timed out
    errors["reset"] = 0 if silent_close else read + write
    if silent_close and read + write:
        result.error = (
            f"wrk saw {read + write:,} read/write errors, not counted: the server closes "
            "connections without `Connection: close`, which wrk cannot tell from a failure"
        )
    errors["read_timeout"] = timeout
    errors["bad_status"] = status
    result.errors = errors
    result.failed = sum(errors.values())
    result.completed = max(0, requests - status)
    result.duration_s = duration_us / 1e6
    result.rps = result.completed / result.duration_s if result.duration_s else 0.0
    if result.completed:
        result.latency_ms = {
            k: v / 1000
            for k, v in zip(("p50", "p90", "p99", "max"), (p50, p90, p99, peak), strict=True)
        }
    return result


def run_wrk(
    host: str,
    port: int,
    path: str,
    n: int,
    c: int,
    keep_alive: bool,
    timeout: float,
    *,
    max_time: float = 300.0,
    threads: int | None = None,
    cpus: set[int] | None = None,
    server: str = "",
    mode: str = "",
) -> RunResult:
    threads = max(1, min(threads or len(os.sched_getaffinity(0)), c))
    announced_close = keep_alive or _announces_close(host, port, path)
    limits = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    with tempfile.TemporaryDirectory(prefix="patchaudit-wrk-") as folder:
        script = Path(folder) / "count.lua"
        script.write_text(_WRK_SCRIPT % {"limits": ", ".join(map(str, limits))})
        command = [find_engine("wrk"), "-t", str(threads), "-c", str(c)]
        command += ["-d", f"{max(1, math.ceil(max_time))}s", "--timeout", f"{timeout:g}s"]
        command += ["-s", str(script)]
        if not keep_alive:  # wrk keeps connections open unless the request says otherwise
            command += ["-H", "Connection: close"]
        command.append(f"http://{host}:{port}{path}")
        finished = [0]

        def thread_done(line: str) -> bool:
            finished[0] += line.startswith("PATCHAUDIT_THREAD_DONE")
            return finished[0] >= threads  # every thread has sent its share: stop wrk

        usage = ProgramCpu(cores=threads, cpus=cpus)
        stdout, stderr, interrupted = _run(command, cpus, max_time, thread_done, usage)
    result = parse_wrk(
        stdout,
        RunResult(server, mode, "wrk", c, n, keep_alive, port=port),
        silent_close=not keep_alive and not announced_close,
    )
    result.client_cpu = usage.result()
    if result.error and stderr.strip():
        result.error = f"wrk: {_last_line(stderr)}"
    if interrupted is not None:
        result.error = "interrupted"
        raise LoadInterrupted(result, interrupted)
    return result


def _announces_close(host: str, port: int, path: str) -> bool:
    """Does the server answer `Connection: close` with a `Connection: close` header?"""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((host, port), timeout=10.0) as sock:
            sock.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return True  # cannot tell: count wrk's errors as they are
    return b"\r\nconnection: close" in head.partition(b"\r\n\r\n")[0].lower()


# ------------------------------------------------------------------------------- common


def _run(
    command: list[str],
    cpus: set[int] | None,
    max_time: float,
    stop_when: Callable[[str], bool],
    usage: ProgramCpu | None = None,
) -> tuple[str, str, int | None]:
    """Run an engine, reading stdout as it comes; SIGINT it when ``stop_when(line)`` says so,
    when Ctrl-C or SIGTERM arrives, or after ``max_time``. Both tools print their report on
    SIGINT. Returns (stdout, stderr, the signal that interrupted us or None); ``usage``, if
    given, samples the tool's CPU as it runs."""
    with tempfile.TemporaryFile() as err:
        child = spawn(
            exec_command(command, cpus),
            stdout=subprocess.PIPE,
            stderr=err,
            deadline=max_time + STOP_SLACK + 20.0,
        )
        stdout = child.process.stdout
        assert stdout is not None
        if usage is not None:
            usage.attach(child)
        chunks: list[bytes] = []
        pending = b""
        interrupted: int | None = None
        deadline = time.monotonic() + max_time + STOP_SLACK
        try:
            while True:
                ready, _, _ = select.select([stdout], [], [], 0.1)
                if usage is not None:
                    usage.sample()
                if ready:
                    chunk = os.read(stdout.fileno(), 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    if any(stop_when(line.decode(errors="replace")) for line in lines):
                        # The group, not the pid: the pid is the supervisor's, which ignores it.
                        child.signal_group(signal.SIGINT)
                elif time.monotonic() > deadline:
                    child.signal_group(signal.SIGINT)
                    deadline += 10.0
        except (KeyboardInterrupt, Interrupted) as exc:
            interrupted = signal_of(exc)
            child.signal_group(signal.SIGINT)  # it prints what it measured
            chunks.append(_read_until_eof(stdout, INTERRUPT_GRACE))
        finally:
            try:
                if interrupted is None and child.poll() is None:
                    child.wait(timeout=5.0)  # its stdout ended: it is exiting
            except subprocess.TimeoutExpired:
                pass
            finally:
                child.kill()  # whatever is left of the group (nothing, when it exited)
                stdout.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return b"".join(chunks).decode(errors="replace"), stderr, interrupted


def _read_until_eof(stream: IO[bytes], seconds: float) -> bytes:
    """What ``stream`` still delivers within ``seconds`` (a tool printing its report)."""
    data = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            break
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        data += chunk
    return data


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
