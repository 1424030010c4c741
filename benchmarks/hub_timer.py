"""What the probe's hub timer costs on a request loop (gevent.pywsgi, keep-alive clients).

Each variant runs in a fresh interpreter with gevent's monitor thread on, as under the audit:
``plain`` (gevent's own tracer only) and ``timed`` (the probe's hub timer installed as the
probe installs it: its greenlet trace function, SIGPROF ticks and the sampler thread). The loop
is 20 greenlet clients each sending keep-alive GETs to a hello-world app in the same process,
so every request is several greenlet switches and almost nothing else (TCP_NODELAY on
both ends, or Nagle's algorithm makes it a latency test): the worst case for a
per-switch hook. Prints requests per second of each variant (median of the repeats) and the
ratio.

Usage: python benchmarks/hub_timer.py [--repeat 5] [--requests 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROBE_DIR = Path(__file__).resolve().parent.parent / "patchaudit" / "probe"

CHILD = r"""
import importlib.util, json, os, sys, time
from gevent import monkey
monkey.patch_all()
import gevent, gevent.pywsgi, gevent.socket

variant, total, probe_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location(
    "_patchaudit_probe", os.path.join(probe_dir, "__init__.py"),
    submodule_search_locations=[probe_dir])
package = importlib.util.module_from_spec(spec)
sys.modules["_patchaudit_probe"] = package
spec.loader.exec_module(package)
from _patchaudit_probe import _hubtime, _state
_state.S.fd = os.open(os.devnull, os.O_WRONLY)
_state.S.step, _state.S.serve_path = "serve", "/"

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

import socket
listener = gevent.socket.socket()
listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(128)
server = gevent.pywsgi.WSGIServer(listener, app, log=None)
server.start()
monitor = gevent.get_hub().start_periodic_monitoring_thread()
if variant == "timed":
    _hubtime.install_hub_timer(monitor)
port = server.server_port
request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

def client(count):
    sock = gevent.socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls
    for _ in range(count):
        sock.sendall(request)
        data = b""
        while not data.endswith(b"ok"):
            data += sock.recv(4096)
    sock.close()

clients = 20
started = time.perf_counter()
gevent.joinall([gevent.spawn(client, total // clients) for _ in range(clients)])
wall = time.perf_counter() - started
print(json.dumps({"rps": total / wall}))
"""


def run(variant: str, requests: int) -> dict:
    env = dict(os.environ, GEVENT_MONITOR_THREAD_ENABLE="1", PYTHONDONTWRITEBYTECODE="1")
    env["GEVENT_MONITOR_PRINT_BLOCKING_REPORTS"] = "0"
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHILD, variant, str(requests), str(PROBE_DIR)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"plain": [], "timed": []}
    for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
        for variant in results:
            results[variant].append(run(variant, args.requests)["rps"])
    plain, timed = (statistics.median(results[v]) for v in ("plain", "timed"))
    print(f"plain: {plain:,.0f} requests/s (median of {args.repeat})")
    extra = (1 / timed - 1 / plain) * 1e6
    print(f"timed: {timed:,.0f} requests/s ({extra:+.1f} us per request)")
    print(f"ratio timed/plain: {timed / plain:.3f} ({(1 - timed / plain) * 100:+.1f} % slower)")


if __name__ == "__main__":
    main()
