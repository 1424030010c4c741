"""A client process of the built-in load client: ``python -P -m patchaudit.harness._worker CONFIG``.

It drives its share of the connections with gevent: one greenlet per connection, each sending
its requests one after the other, all on gevent's hub. In the closed model (the default) a
connection sends its next request as soon as the last one is answered. In the open model
(``rate`` in the config) request ``k`` of this process is due at ``origin + k / rate``: a free
connection takes the next due request, waits for its time, and its latency is recorded from that
intended time (a second histogram keeps the service time, from the actual send).

It writes its counters into its slot of the shared block (inherited as the descriptor
``counters_fd``) as it goes (the parent reads them live), and prints its encoded latency
histogram(s) as one JSON line when it is done.

It runs under :func:`patchaudit._supervise.supervise`, which ends it when the parent ends; it
never watches the parent itself. Safe-path mode (``-P``, see ``_children.python_command``) keeps
the directory bench was started from off ``sys.path``.

The hot loop uses the hub and io watchers on plain non-blocking sockets instead of
gevent.socket: the same event loop, at about half the CPU per request (measured against nginx:
66 µs instead of 132 µs, most of it the kernel's), which lets one client keep up with ab.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .stats import (
    BYTES,
    CPU_US,
    DONE,
    END_NS,
    ERROR_KINDS,
    ERRORS_AT,
    FAILED,
    GO,
    LATE,
    LATE_FLOOR_NS,
    OK,
    PEAK_RSS_KB,
    START_NS,
    STATE,
    STATE_DONE,
    STATE_READY,
    STATE_RUNNING,
    STOP,
    WALL_US,
    SharedCounters,
    new_histogram,
)

_ERR = {kind: ERRORS_AT + i for i, kind in enumerate(ERROR_KINDS)}
_BUF = 65536


class _Failure(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind


class _TimedOut(Exception):
    """Thrown into a request's greenlet by the timeout monitor."""


def _cpu_us() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return int((usage.ru_utime + usage.ru_stime) * 1e6)


def _peak_rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_response(recv: Callable[[], bytes], keep_alive: bool) -> tuple[bool, bool, int]:
    """Read one HTTP/1.x response with ``recv``; return (2xx/3xx, connection reusable, bytes).

    Raises _Failure("reset") if the connection ends before the header is complete,
    _Failure("short_body") if it ends inside the body, _Failure("bad_status") if it is not HTTP.
    """
    buf = recv()
    if not buf:
        raise _Failure("reset")
    while (head_end := buf.find(b"\r\n\r\n")) < 0:
        more = recv()
        if not more:
            raise _Failure("reset")
        buf += more
    if not buf.startswith(b"HTTP/1.") or buf[12:13] not in (b" ", b"\r"):
        raise _Failure("bad_status")
    status = buf[9:12]
    good = status[:1] in (b"2", b"3") and status.isdigit()
    head = buf[:head_end].lower()
    have = len(buf) - head_end - 4
    reusable = keep_alive and b"\r\nconnection: close" not in head
    if buf.startswith(b"HTTP/1.0") and b"\r\nconnection: keep-alive" not in head:
        reusable = False
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : end if end >= 0 else None])
        while have < length:
            more = recv()
            if not more:
                raise _Failure("short_body")
            have += len(more)
    elif b"\r\ntransfer-encoding: chunked" in head:
        have = _read_chunked(recv, buf[head_end + 4 :])
    elif status in (b"204", b"304") or status[:1] == b"1":
        pass
    else:  # no length: the body runs until the server closes
        reusable = False
        while more := recv():
            have += len(more)
    return good, reusable, head_end + 4 + have


def _read_chunked(recv: Callable[[], bytes], data: bytes) -> int:
    total, pos = 0, 0
    while True:
        while (line_end := data.find(b"\r\n", pos)) < 0:
            data = _more(recv, data)
        size = int(data[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            while data.find(b"\r\n", pos - 2) < 0 or data.find(b"\r\n\r\n", pos - 2) < 0:
                data = _more(recv, data)  # optional trailers end with an empty line
            return total
        while len(data) < pos + size + 2:
            data = _more(recv, data)
        total += size
        pos += size + 2


def _more(recv: Callable[[], bytes], data: bytes) -> bytes:
    more = recv()
    if not more:
        raise _Failure("short_body")
    return data + more


def _classify(exc: BaseException, connecting: bool) -> str | None:
    from gevent import GreenletExit

    if isinstance(exc, _Failure):
        return exc.kind
    if isinstance(exc, GreenletExit | KeyboardInterrupt | SystemExit):
        return None  # stopped: the request does not count
    if isinstance(exc, _TimedOut | TimeoutError):
        return "connect_timeout" if connecting else "read_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, ValueError):  # unparsable Content-Length or chunk size
        return "bad_status"
    return "other"


def worker_main(config: dict) -> int:
    import _socket
    import errno
    from socket import (
        AF_INET,
        IPPROTO_TCP,
        SO_ERROR,
        SOCK_STREAM,
        SOL_SOCKET,
        TCP_NODELAY,
    )

    import gevent
    import gevent.event

    hub = gevent.get_hub()
    io, wait = hub.loop.io, hub.wait
    if config.get("cpus"):
        os.sched_setaffinity(0, config["cpus"])
    counters = SharedCounters(config["processes"], fd=config["counters_fd"])
    words = counters.words
    base = counters.base(config["index"])
    histogram = new_histogram()
    record = histogram.record_value
    service = new_histogram() if config.get("rate") else None
    record_service = service.record_value if service is not None else None
    addr = (config["host"], config["port"])
    timeout_ns = int(config["timeout"] * 1e9)
    keep_alive = config["keep_alive"]
    request = (
        f"GET {config['path']} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
        f"User-Agent: patchaudit-bench\r\nAccept: */*\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode()
    remaining = config["n"]
    now = time.monotonic_ns
    concurrency = config["c"]
    # Per connection: when its current request began. The monitor reads ``started`` and sets it
    # to 0 when it gives up on a request; ``current`` is the connection's own copy, to tell a
    # kill meant for the current request from a late one meant for a request already over.
    started = [0] * concurrency
    current = [0] * concurrency

    finished = gevent.event.Event()
    running = [concurrency]
    # Open model: the schedule. ``origin`` is set at release; this process's share of the rate
    # is offset by ``offset_ns`` so that the processes' requests interleave evenly.
    interval_ns = 1e9 / config["rate"] if config.get("rate") else 0.0
    late_ns = max(interval_ns, LATE_FLOOR_NS)
    schedule = {"origin": 0, "next": 0}

    def connection(slot: int) -> None:
        try:
            connection_loop(slot)
        finally:
            running[0] -= 1
            if not running[0]:
                finished.set()

    def connection_loop(slot: int) -> None:
        nonlocal remaining
        sock = reader = None

        def wait_for(watcher) -> None:
            while True:
                try:
                    return wait(watcher)
                except _TimedOut as exc:
                    if exc.args[0] == current[slot]:
                        raise
                    # A kill aimed at an earlier request that finished before it landed.

        def recv() -> bytes:
            while True:
                try:
                    return sock.recv(_BUF)
                except BlockingIOError:
                    wait_for(reader)

        while remaining > 0:
            remaining -= 1
            if interval_ns:
                # Take the next due request (cooperative: no other greenlet runs in between).
                ticket = schedule["next"]
                schedule["next"] = ticket + 1
                intended = schedule["origin"] + int(ticket * interval_ns)
                ahead = intended - now()
                if ahead > 0:
                    gevent.sleep(ahead / 1e9)
                    if sock is not None and _closed_while_idle(sock):
                        # A keep-alive connection that waited for its next send may have been
                        # closed by the server's idle timeout (gunicorn's is 2 s): reconnect,
                        # as a browser would, rather than count a reset no user would see.
                        reader.close()
                        sock.close()
                        sock = reader = None
            started[slot] = current[slot] = t0 = now()
            if interval_ns and t0 - intended > late_ns:
                words[base + LATE] += 1  # no connection was free, or the loop was too busy
            connecting = sock is None
            try:
                pending = request
                if sock is None:
                    sock = _socket.socket(AF_INET, SOCK_STREAM)
                    sock.setblocking(False)
                    sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
                    err = sock.connect_ex(addr)
                    if err == errno.EINPROGRESS:
                        # On loopback the handshake is usually over by now: send at once and
                        # wait for writability only if the kernel says it is not (-10 µs/req).
                        try:
                            pending = request[sock.send(request) :]
                        except BlockingIOError:
                            _wait(sock, 2, io, wait_for)
                            err = sock.getsockopt(SOL_SOCKET, SO_ERROR)
                    if err and err != errno.EINPROGRESS:
                        raise OSError(err, os.strerror(err))  # e.g. ConnectionRefusedError
                    reader = io(sock.fileno(), 1)
                    connecting = False
                if pending:
                    _send(sock, pending, io, wait_for)
                wait_for(reader)  # the answer cannot be there yet: skip a recv() that fails
                good, reusable, size = read_response(recv, keep_alive)
            except BaseException as exc:
                started[slot] = 0
                kind = _classify(exc, connecting)
                if sock is not None:
                    if reader is not None:
                        reader.close()
                    sock.close()
                    sock = reader = None
                if kind is None:
                    raise
                words[base + _ERR[kind]] += 1
                words[base + FAILED] += 1
                words[base + DONE] += 1
                words[base + END_NS] = now()
                continue
            end = now()
            if not started[slot] or end - t0 > timeout_ns:  # too late is a timeout
                good, reusable = None, False
            started[slot] = 0
            words[base + DONE] += 1
            words[base + BYTES] += size
            if good is None:
                words[base + _ERR["read_timeout"]] += 1
                words[base + FAILED] += 1
            elif good:
                words[base + OK] += 1
                if interval_ns:
                    # From the intended time: a stall delays the sends it blocks, and that
                    # delay is part of what their users would wait (coordinated omission).
                    record(max(1, (end - intended) // 1000))
                    record_service(max(1, (end - t0) // 1000))
                else:
                    record(max(1, (end - t0) // 1000))
            else:
                words[base + _ERR["bad_status"]] += 1
                words[base + FAILED] += 1
            words[base + END_NS] = end
            if not reusable:
                reader.close()
                sock.close()
                sock = reader = None
        if sock is not None:
            reader.close()
            sock.close()

    words[base + STATE] = STATE_READY
    give_up = time.monotonic() + 60
    while words[GO] == 0:  # released together, so the processes start at the same moment
        if words[STOP] or time.monotonic() > give_up:
            return 0
        time.sleep(0.001)
    words[base + STATE] = STATE_RUNNING
    cpu_at_start = _cpu_us()
    words[base + START_NS] = now()
    schedule["origin"] = words[GO] + config.get("offset_ns", 0)  # one timeline for all
    deadline = words[GO] + int(config["max_time"] * 1e9)
    greenlets = [gevent.spawn(connection, slot) for slot in range(concurrency)]
    tick = min(0.1, config["timeout"] / 4)
    # One monitor instead of a timer per request: it enforces --timeout, --max-time and stop.
    while not finished.wait(timeout=tick):
        moment = now()
        if words[STOP] or moment > deadline:
            gevent.killall(greenlets, timeout=2.0)
            break
        for slot, began in enumerate(started):
            if began and moment - began > timeout_ns:
                started[slot] = 0
                greenlets[slot].kill(_TimedOut(began), block=False)
    words[base + CPU_US] = _cpu_us() - cpu_at_start
    words[base + WALL_US] = (now() - words[base + START_NS]) // 1000
    words[base + PEAK_RSS_KB] = _peak_rss_kb()
    report = {"histogram": histogram.encode().decode("ascii")}
    if service is not None:
        report["service"] = service.encode().decode("ascii")
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    words[base + STATE] = STATE_DONE
    counters.close()
    return 0


def _closed_while_idle(sock) -> bool:
    """Has the server closed (or reset, or written to) an idle connection?"""
    from socket import MSG_PEEK

    try:
        sock.recv(1, MSG_PEEK)  # b"": closed; data before a request: not a response of ours
        return True
    except BlockingIOError:
        return False  # nothing to read: still open
    except OSError:
        return True


def _wait(sock, events: int, io, wait) -> None:
    watcher = io(sock.fileno(), events)
    try:
        wait(watcher)
    finally:
        watcher.close()


def _send(sock, data: bytes, io, wait) -> None:
    while data:
        try:
            sent = sock.send(data)
        except BlockingIOError:
            _wait(sock, 2, io, wait)
            continue
        data = data[sent:]


if __name__ == "__main__":
    from patchaudit._supervise import supervise

    supervise()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    sys.exit(worker_main(json.loads(sys.argv[1])))
