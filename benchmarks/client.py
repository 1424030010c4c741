"""How good is `patchaudit bench`'s built-in client? Next to ab, wrk and locust, in one run.

1. The same gevent pywsgi server at c=100 and c=1000: the built-in client should reach at least
   0.9x ab's requests per second (new connection per request, as in the seed).
2. nginx serving the same page (Debian's nginx, started here on loopback with a temporary
   config): the machine's ceiling, to show the client's headroom. Target: at least half of ab.
3. The client's peak memory at c=10,000 (all client processes together, VmHWM from /proc):
   target below 300 MB.
4. The open model (`--rate`) on the same gevent server: a closed-model run measures its
   throughput, then open-model runs at 50 % and 90 % of it report the target against the
   achieved rate and p50/p99 open (from the intended send) against closed. No target: it shows
   what the closed model leaves out. `--open-model-only` runs just this part.

Engines are interleaved round by round and the median of the rounds is compared, so a noisy
neighbour hurts all of them alike. ab, wrk and locust are optional (their rows are skipped when
missing); nginx is needed for parts 2 and 3 (`apt-get install nginx`). locust (`--engine locust`:
a master and one worker per core, FastHttpUser) has no target: its row shows what the usual
Python load tool reaches on the same server.

    python benchmarks/client.py [--rounds 3] [--requests 30000] [--engines builtin,ab,wrk,locust]
                                [--json results.json]
    python benchmarks/client.py --open-model-only [--requests 5000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from patchaudit.harness import RunResult, raise_nofile, run_load, start_server
from patchaudit.harness._locust import run_locust
from patchaudit.harness.engines import run_ab, run_wrk

HOST = "127.0.0.1"
SERVE = Path(__file__).resolve().parent.parent / "patchaudit" / "harness" / "_serve.py"
NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
daemon off;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    default_type text/html;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen {host}:{port} backlog=4096;
        root {dir}/html;
        location / {{ index index.html; }}
    }}
}}
"""


def demo_page() -> bytes:
    """The exact bytes the harness's demo app serves (read from _serve.py, not duplicated)."""
    namespace: dict = {}
    exec(compile(SERVE.read_text(), str(SERVE), "exec"), namespace)  # defines PAGE, no side effects
    return namespace["PAGE"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextmanager
def nginx() -> Iterator[tuple[str, int]]:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if binary is None:
        raise SystemExit("nginx not found: `apt-get install nginx` (only the binary is used)")
    with tempfile.TemporaryDirectory(prefix="patchaudit-nginx-") as folder:
        root = Path(folder)
        root.chmod(0o755)  # nginx's workers run as nobody/www-data and must read the page
        (root / "html").mkdir()
        (root / "tmp").mkdir()
        (root / "html" / "index.html").write_bytes(demo_page())
        port = free_port()
        (root / "nginx.conf").write_text(NGINX_CONF.format(dir=folder, host=HOST, port=port))
        process = subprocess.Popen(
            [binary, "-c", str(root / "nginx.conf"), "-p", folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        message = process.stderr.read().decode()
                        raise SystemExit(f"nginx did not start: {message}") from None
                    time.sleep(0.05)
            yield HOST, port
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


SELECTED: set[str] = {"builtin", "ab", "wrk", "locust"}  # --engines


def engines(keep_alive: bool = False) -> dict[str, Callable[..., RunResult]]:
    found: dict[str, Callable[..., RunResult]] = {
        "builtin": lambda h, p, n, c: run_load(h, p, "/", n, c, keep_alive, 30.0, max_time=120)
    }
    if shutil.which("ab"):
        found["ab"] = lambda h, p, n, c: run_ab(h, p, "/", n, c, keep_alive, 30.0, max_time=120)
    if shutil.which("wrk"):
        found["wrk"] = lambda h, p, n, c: run_wrk(h, p, "/", n, c, keep_alive, 30.0, max_time=120)
    if importlib.util.find_spec("locust"):  # run as a subprocess, never imported
        found["locust"] = lambda h, p, n, c: run_locust(
            h, p, "/", n, c, keep_alive, 30.0, max_time=120
        )
    return {name: run for name, run in found.items() if name in SELECTED}


def compare(label: str, target: tuple[str, int], c: int, n: int, rounds: int, keep_alive=False):
    """Interleave the engines for ``rounds`` rounds; return {engine: median req/s}."""
    samples: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for _ in range(rounds):
        for engine, run in engines(keep_alive).items():
            result = run(*target, n, c)
            samples.setdefault(engine, []).append(result.rps)
            failures[engine] = failures.get(engine, 0) + result.failed
    medians = {engine: statistics.median(values) for engine, values in samples.items()}
    for engine, value in medians.items():
        spread = ", ".join(f"{v:,.0f}" for v in samples[engine])
        print(
            f"  {label:<28} c={c:<5} {engine:<8} {value:>8,.0f} req/s (median of {spread}); "
            f"{failures[engine]} failed"
        )
    return medians


def verdict(name: str, value: float, target: float, higher_is_better: bool = True) -> bool:
    ok = value >= target if higher_is_better else value < target
    relation = ">=" if higher_is_better else "<"
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value:.2f} (target {relation} {target:g})")
    return ok


def _latency(result: RunResult) -> str:
    lat = result.latency_ms
    return f"p50 {lat['p50']} ms, p99 {lat['p99']} ms" if lat["p50"] is not None else "no latency"


def open_model(requests: int, c: int = 100) -> dict[str, object]:
    """Part 4: closed-model throughput, then the open model at 50 % and 90 % of it."""
    figures: dict[str, object] = {}
    with start_server("gevent", concurrency=c) as (host, port):
        closed = run_load(host, port, "/", requests, c, False, 30.0, max_time=120)
        capacity = closed.rps
        print(
            f"  closed  c={c:<4} {capacity:>8,.0f} req/s  {_latency(closed)}; "
            f"client CPU {closed.client_cpu.total if closed.client_cpu else 0:.2f} cores"
        )
        figures["closed"] = closed.to_json()
        for share in (0.5, 0.9):
            rate = round(capacity * share)
            if rate < 1:
                continue
            run = run_load(host, port, "/", requests, c, False, 30.0, max_time=120, rate=rate)
            service = run.service_ms or {}
            print(
                f"  open {share:.0%}  target {rate:>7,} achieved {run.achieved_rate or 0:>8,.0f} "
                f"req/s  {_latency(run)} (service p50 {service.get('p50')} ms, p99 "
                f"{service.get('p99')} ms); late {run.late_sends:,}; "
                f"{'SATURATED' if run.saturated else 'on schedule'}"
            )
            figures[f"open_{round(share * 100)}"] = run.to_json()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--engines", default=",".join(sorted(SELECTED)), help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--open-model-only", action="store_true", help="run only part 4")
    args = parser.parse_args()
    SELECTED.intersection_update(name.strip() for name in args.engines.split(","))
    if "builtin" not in SELECTED:
        raise SystemExit("--engines must include builtin: the targets compare it")
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up even when redirected
    raise_nofile()
    figures: dict[str, object] = {"cpus": len(os.sched_getaffinity(0)), "load": os.getloadavg()}
    checks: list[bool] = []
    print(f"load average before: {os.getloadavg()[0]:.2f} on {figures['cpus']} cores")
    if args.open_model_only:
        print("\n4. the open model on gevent pywsgi, a new connection per request")
        figures["open_model"] = open_model(args.requests)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0

    print("\n1. gevent pywsgi (patched), a new connection per request")
    for c in (100, 1000):
        with start_server("gevent", concurrency=c) as target:
            medians = compare("gevent pywsgi", target, c, args.requests, args.rounds)
        figures[f"gevent_c{c}"] = medians
        if "ab" in medians:
            checks.append(
                verdict(f"builtin / ab, gevent c={c}", medians["builtin"] / medians["ab"], 0.9)
            )

    print("\n2. nginx (the ceiling), a new connection per request, then keep-alive")
    with nginx() as target:
        for c in (100, 1000):
            medians = compare("nginx", target, c, args.requests, args.rounds)
            figures[f"nginx_c{c}"] = medians
            if "ab" in medians:
                checks.append(
                    verdict(f"builtin / ab, nginx c={c}", medians["builtin"] / medians["ab"], 0.5)
                )
        medians = compare("nginx keep-alive", target, 100, args.requests * 3, args.rounds, True)
        figures["nginx_keepalive_c100"] = medians

        print("\n3. client memory at c=10,000 (nginx, new connection per request)")
        result = run_load(*target, "/", 20_000, 10_000, False, 30.0, max_time=120)
        peak_mb = (result.client_peak_rss_kb or 0) / 1024
        figures["client_peak_rss_mb_c10000"] = round(peak_mb, 1)
        print(
            f"  {result.completed:,} completed, {result.failed:,} failed, {result.rps:,.0f} req/s; "
            f"peak RSS of all client processes together: {peak_mb:.0f} MB"
        )
        checks.append(verdict("client peak memory at c=10,000, MB", peak_mb, 300, False))

    print("\n4. the open model on gevent pywsgi, a new connection per request")
    figures["open_model"] = open_model(args.requests)

    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print(f"{sum(checks)} of {len(checks)} targets met")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
