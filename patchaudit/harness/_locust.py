"""`--engine locust`: the same runs driven by locust, a headless master and local workers.

Locust is never imported here: it monkey-patches everything when imported. It runs as
``python -m locust`` from bench's own environment (the ``harness`` extra installs it), each
process under a supervisor (:func:`patchaudit._exec.exec_command`), like ab and wrk, so every
one dies with bench. The locustfile is ``_locustfile.py`` with its ``SETTINGS`` filled in,
written to a scratch folder; it makes the run stop after exactly ``-n`` requests, classifies the
failures into :data:`~patchaudit.harness.stats.ERROR_KINDS` and writes the master's totals as
JSON, which :func:`parse_summary` turns into a :class:`~patchaudit.harness.stats.RunResult`.

Workers on other machines join with :func:`worker_command` (``-f -``: they download the
locustfile from the master) when bench is told to expect them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from .._exec import exec_command
from .._process import Child, Interrupted, spawn
from .._scratch import scratch_dir
from ._children import python_command
from .client import (
    INTERRUPT_GRACE,
    START_TIMEOUT,
    STOP_SLACK,
    LoadInterrupted,
    default_processes,
    signal_of,
)
from .engines import EngineMissing, _last_line
from .stats import ERROR_KINDS, RunResult, client_cpu

LOCUST_HINT = (
    "locust is not installed: `pip install 'patchaudit[harness]'` "
    "(or use the built-in client, --engine builtin)"
)
#: How locust's percentiles are rounded (``locust.stats.bucket_response_time``): the JSON
#: document and docs/harness.md carry it.
PERCENTILE_NOTE = (
    "locust rounds every response time before counting it (locust.stats.bucket_response_time): "
    "to the whole millisecond below 100 ms, to 10 ms below 1 s, to 100 ms below 10 s, to 1 s "
    "above; p50/p90/p99 are those rounded values and include failed requests, max is exact"
)
WILDCARDS = ("", "*", "0.0.0.0", "::")
_TEMPLATE = Path(__file__).with_name("_locustfile.py")
_SETTINGS_LINE = "SETTINGS: dict = {}"
_READY = re.compile(r"reported as ready\. (\d+) workers connected")
_KIND = re.compile(r"patchaudit:([a-z_]+)")
# The least time workers get to connect, whatever --timeout says: a locust process takes seconds
# to start on a loaded machine, and the master starts waiting when it has started itself.
WORKER_WAIT_MIN = 5.0
# Seconds the master gets after Ctrl-C: its workers' last statistics (1 s), then its report.
_INTERRUPT_WAIT = INTERRUPT_GRACE + 3.0


def find_locust() -> None:
    """Raise :class:`EngineMissing` unless locust can run in this environment (not imported)."""
    if importlib.util.find_spec("locust") is None:
        raise EngineMissing(LOCUST_HINT)


def parse_master_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``HOST`` (a free port) into (host, port); ValueError says why not."""
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "0")
    host = host.strip("[]")
    if not sep and not host:
        raise ValueError("--master-bind takes HOST:PORT, e.g. 127.0.0.1:5557")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--master-bind {text}: the port must be a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--master-bind {text}: the port must be between 0 and 65535")
    return host or "127.0.0.1", number


def master_bind_problem(text: str) -> str | None:
    """One line saying why the master cannot listen on ``--master-bind text``, or None."""
    host, port = parse_master_bind(text)
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            "0.0.0.0" if host in ("", "*") else host, port, type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as exc:
        return f"--master-bind {text}: the master cannot listen there ({exc.strerror or exc})"
    return None


def connect_host(bind_host: str) -> str:
    """Where workers on this machine reach a master bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in WILDCARDS else bind_host


def worker_command(bind_host: str, port: int) -> list[str]:
    """The command that starts one more worker, on any machine, against the master."""
    host = socket.getfqdn() if bind_host in WILDCARDS else bind_host
    return ["locust", "--worker", "--master-host", host, "--master-port", str(port), "-f", "-"]


def locustfile(
    host: str, port: int, path: str, n: int, workers: int, keep_alive: bool, timeout: float,
    summary: Path,
) -> str:  # fmt: skip
    """The locustfile for one run: the template with its SETTINGS filled in."""
    settings = {
        "host": f"http://{host}:{port}", "path": path, "requests": n, "workers": workers,
        "keep_alive": keep_alive, "timeout": timeout, "summary": str(summary),
    }  # fmt: skip
    template = _TEMPLATE.read_text(encoding="utf-8")
    if template.count(_SETTINGS_LINE) != 1:  # pragma: no cover - the template is ours
        raise RuntimeError(f"{_TEMPLATE} has no single {_SETTINGS_LINE!r} line")
    return template.replace(_SETTINGS_LINE, f"SETTINGS = {settings!r}")


def parse_summary(summary: dict, result: RunResult) -> RunResult:
    """Fill ``result`` from the master's summary (``_locustfile._on_quitting`` writes it)."""
    errors = dict.fromkeys(ERROR_KINDS, 0)
    for message, count in summary["errors"].items():
        match = _KIND.search(message)
        kind = match.group(1) if match and match.group(1) in errors else "other"
        errors[kind] += count
    result.errors = errors
    result.failed = summary["failures"]
    result.completed = max(0, summary["requests"] - summary["failures"])
    start, last = summary.get("start_time"), summary.get("last_request_time")
    result.duration_s = max(0.0, last - start) if start and last else 0.0
    result.rps = result.completed / result.duration_s if result.duration_s else 0.0
    if result.completed:
        latency: dict[str, float | None] = {
            key: float(value) for key, value in summary["percentiles_ms"].items()
        }
        latency["max"] = round(float(summary["max_ms"]), 3)
        result.latency_ms = latency
    # each worker's CPU over its own share of the load, remote ones included (one core each:
    # a locust worker is one gevent loop); absent when they did not finish (Ctrl-C)
    usage = [pair for pair in summary.get("workers_cpu") or () if len(pair) == 2 and pair[1] > 0]
    if usage:
        seconds = [float(cpu) for cpu, _ in usage]
        result.client_cpu = client_cpu(seconds, max(w for _, w in usage), [1] * len(usage))
    return result


def run_locust(
    host: str,
    port: int,
    path: str,
    n: int,
    c: int,
    keep_alive: bool,
    timeout: float,
    *,
    max_time: float = 300.0,
    workers_local: int | None = None,
    expect_workers: int = 0,
    master_bind: str = "127.0.0.1",
    announce: Callable[[list[str]], None] | None = None,
    cpus: set[int] | None = None,
    server: str = "",
    mode: str = "",
) -> RunResult:
    """One run: a master, ``workers_local`` workers here (default: one per core, at most one per
    user) and ``expect_workers`` started elsewhere, ``c`` users, exactly ``n`` requests.

    ``announce`` receives :func:`worker_command` once the master is starting. The master waits
    ``timeout`` seconds (at least :data:`WORKER_WAIT_MIN`) for every worker; a run stops after
    ``max_time`` seconds of load."""
    find_locust()
    result = RunResult(server, mode, "locust", c, n, keep_alive, port=port)
    local = min(default_processes() if workers_local is None else workers_local, c)
    local = max(0, min(local, c - expect_workers))
    workers = local + expect_workers
    if workers < 1 or c < workers:
        result.error = f"locust needs one user per worker: -c {c} for {workers} workers"
        return result
    bind_host, bind_port = parse_master_bind(master_bind)
    bind_port = bind_port or _free_port(connect_host(bind_host))
    with scratch_dir("locust") as folder:
        summary = folder / "summary.json"
        script = folder / "patchaudit_locustfile.py"
        script.write_text(locustfile(host, port, path, n, workers, keep_alive, timeout, summary))
        locust = python_command(module="locust")
        master = [*locust, "-f", str(script), "--master", "--headless", "--only-summary"]
        master += ["--master-bind-host", bind_host, "--master-bind-port", str(bind_port)]
        master += ["--expect-workers", str(workers)]
        wait = math.ceil(max(timeout, WORKER_WAIT_MIN))
        master += ["--expect-workers-max-wait", str(wait)]
        master += ["-u", str(c), "-r", str(c), "-t", f"{max(1, math.ceil(max_time))}s"]
        master += ["--exit-code-on-error", "0"]  # failures are in the summary
        worker = [*locust, "-f", str(script), "--worker"]
        worker += ["--master-host", connect_host(bind_host), "--master-port", str(bind_port)]
        lifetime = START_TIMEOUT + max(timeout, WORKER_WAIT_MIN) + max_time + STOP_SLACK
        children: list[Child] = []
        interrupted: int | None = None
        try:
            children.append(_start(master, "master", folder, cpus, lifetime))
            if announce is not None:
                announce(worker_command(bind_host, bind_port))
            for index in range(local):
                children.append(_start(worker, f"worker{index}", folder, cpus, lifetime))
            try:
                children[0].wait(timeout=lifetime)
            except subprocess.TimeoutExpired:  # locust ignored its own -t: stop it
                children[0].signal_group(signal.SIGTERM)
                _wait(children[0], 10.0)
        except (KeyboardInterrupt, Interrupted) as exc:
            interrupted = signal_of(exc)
            if children:
                children[0].signal_group(signal.SIGINT)  # it collects and reports what it has
                _wait(children[0], _INTERRUPT_WAIT)
        finally:
            for child in children:
                child.kill()
        _read_outcome(result, folder, summary, interrupted is not None, max_time, workers, wait)
    if interrupted is not None:
        result.error = "interrupted"
        raise LoadInterrupted(result, interrupted)
    return result


def _read_outcome(
    result: RunResult, folder: Path, summary: Path, interrupted: bool, max_time: float,
    workers: int, wait: int,
) -> None:  # fmt: skip
    """Fill ``result`` from the master's summary, or say why there is none."""
    if summary.exists():
        data = json.loads(summary.read_text())
        parse_summary(data, result)
        done = result.completed + result.failed
        if not interrupted and done < result.requests:
            if result.duration_s >= max_time - 0.5:
                result.error = f"stopped by --max-time ({max_time:g}s)"
            else:
                result.error = (
                    f"locust stopped after {done:,} requests "
                    f"({data['workers_done']} of {data['workers']} workers finished)"
                )
        return
    log = (folder / "master.err").read_text(errors="replace")
    if "Gave up waiting for workers" in log:
        ready = _READY.findall(log)
        result.error = (
            f"only {ready[-1] if ready else 0} of {workers} locust workers connected "
            f"within {wait}s (--timeout)"
        )
    elif not interrupted:
        result.error = f"locust master: {_last_line(log) or 'no report'}"


def _start(command: list[str], name: str, folder: Path, cpus: set[int] | None, lifetime: float):
    # Locust reads LOCUST_* variables and locust.conf/pyproject.toml in its working directory:
    # neither may change the run, so it gets a clean environment and the scratch folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    with open(folder / f"{name}.out", "wb") as out, open(folder / f"{name}.err", "wb") as err:
        return spawn(
            exec_command(command, cpus),
            env=env,
            cwd=folder,
            stdout=out,
            stderr=err,
            deadline=lifetime + 20.0,
        )


def _wait(child: Child, seconds: float) -> None:
    try:
        child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
