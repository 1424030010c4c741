"""Requests from patchaudit to a port the audited command listens on (127.0.0.1 only).

The same measurement as the emulated modes' (one request alone, then a batch from parallel
clients, per path), taken from the outside: the server is the user's own. The result has the
shape of the probe's ``serve`` event, so the request checks read both the same way.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..probe._serving import _one_request  # the one HTTP/1.1 GET both sides send

__all__ = ["DriveSettings", "answers_http", "drive"]


@dataclass(frozen=True)
class DriveSettings:
    paths: tuple[str, ...] = ("/",)
    requests: int = 20
    concurrency: int = 10
    request_timeout: float = 10.0


def answers_http(port: int, path: str, timeout: float) -> bool:
    """Whether the port speaks HTTP (a celery or ZeroMQ port does not: it is left alone)."""
    _latency, status, _error = _one_request(socket.socket, port, path, timeout)
    return status is not None


def _batch(port: int, path: str, count: int, concurrency: int, timeout: float) -> tuple:
    results: list[Any] = [None] * count
    cursor = iter(range(count))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            results[index] = _one_request(socket.socket, port, path, timeout)

    started = time.perf_counter()
    threads = [
        threading.Thread(target=client, name="patchaudit-request", daemon=True)
        for _ in range(max(1, min(concurrency, count)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:  # each request is bounded by its timeout, so the batch is too
        thread.join()
    return time.perf_counter() - started, results


def drive(port: int, settings: DriveSettings) -> list[dict[str, Any]]:
    """One ``serve`` record per path; ``started``/``ended`` are wall-clock times, so the
    processes' events can be told apart as during or outside the requests."""
    records = []
    for path in settings.paths:
        started = time.time()
        _, single = _batch(port, path, 1, 1, settings.request_timeout)
        wall, results = _batch(
            port, path, settings.requests, settings.concurrency, settings.request_timeout
        )
        statuses: dict[str, int] = {}
        for _latency, status, _error in results:
            key = "none" if status is None else str(status)
            statuses[key] = statuses.get(key, 0) + 1
        records.append(
            {
                "event": "serve",
                "port": port,
                "path": path,
                "single": single[0][0],
                "single_status": single[0][1],
                "single_error": single[0][2],
                "requests": settings.requests,
                "concurrency": settings.concurrency,
                "wall": round(wall, 6),
                "latencies": [r[0] for r in results],
                "statuses": statuses,
                "errors": [r[2] for r in results if r[2]],
                "server_errors": [],
                "started": started,
                "ended": time.time(),
            }
        )
    return records
