"""Serving: the WSGI callable on gevent.pywsgi in this process, clients on real native threads."""

import sys
from time import perf_counter

from ._events import emit
from ._frames import qualified_type, traceback_frames
from ._hangs import dump
from ._state import S, leave_if_forked_child


class _ErrorLog:
    """File-like error_log for pywsgi: keeps the first lines it is given."""

    def __init__(self):
        self.lines = []

    def write(self, data):
        for line in str(data).splitlines():
            if line.strip() and len(self.lines) < 20:
                self.lines.append(line[:300])

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass


def _call_app(app, environ, start_response):
    return app(environ, start_response)


def _next_chunk(iterator):
    return next(iterator)


#: A greenlet with one of these on its stack is serving a request (see ``_hangs.dump``).
REQUEST_CODES = (_call_app.__code__, _next_chunk.__code__)


def _wrap_wsgi(app):
    reported = set()

    def report(exc):
        key = (S.serve_path, type(exc).__name__, str(exc))
        if key in reported:
            return
        reported.add(key)
        emit(
            "request_error",
            path=S.serve_path,
            type=qualified_type(exc),
            message=str(exc),
            traceback=traceback_frames(exc.__traceback__),
        )

    class _Body:
        def __init__(self, iterable):
            self.iterable = iterable
            self.iterator = None

        def __iter__(self):
            self.iterator = iter(self.iterable)
            return self

        def __next__(self):
            try:
                return _next_chunk(self.iterator)
            except StopIteration:
                raise
            except Exception as exc:
                report(exc)
                raise

        def close(self):
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()

    def wrapped(environ, start_response):
        try:
            return _Body(_call_app(app, environ, start_response))
        except Exception as exc:
            report(exc)
            raise

    return wrapped


def _one_request(raw_socket, port, path, timeout):
    """(latency, status, error) for one GET on a native-blocking original socket."""
    start = perf_counter()
    status = None
    error = None
    sock = raw_socket()  # AF_INET, SOCK_STREAM
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        head = b"".join(chunks)[:200].split(b"\r\n", 1)[0].split()
        if len(head) >= 2 and head[1].isdigit():
            status = int(head[1])
        else:
            error = f"malformed response: {b''.join(chunks)[:80]!r}"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        # socket.timeout is TimeoutError since 3.10, its own OSError subclass before
        if isinstance(exc, TimeoutError) or type(exc).__name__ == "timeout":
            error = _TIMED_OUT + error
    finally:
        try:
            sock.close()
        except Exception:
            pass
    latency = perf_counter() - start
    return (None if error else round(latency, 6)), status, error


_TIMED_OUT = "no response within the request timeout: "
_NOT_SENT = "not sent: an earlier request got no response within the request timeout"


def _run_batch(port, path, count, concurrency, timeout):
    """Send ``count`` requests from ``concurrency`` native threads; keep the hub running.
    The first request that gets no response in time has the hang dumped while it lasts."""
    import gevent
    from gevent.monkey import get_original

    start_new_thread = get_original("_thread", "start_new_thread")
    allocate_lock = get_original("_thread", "allocate_lock")
    raw_socket = get_original("socket", "socket")

    results = [None] * count
    state = {"next": 0, "finished": 0}
    lock = allocate_lock()
    workers = max(1, min(concurrency, count))

    def worker():
        try:
            while True:
                with lock:
                    index = state["next"]
                    # once requests stop completing, more of them would only wait out the
                    # timeout again: the dump was taken, the rest are not sent
                    if index >= count or state.get("stalled"):
                        break
                    state["next"] = index + 1
                results[index] = result = _one_request(raw_socket, port, path, timeout)
                if result[2] and result[2].startswith(_TIMED_OUT):
                    state["stalled"] = True
        finally:
            with lock:
                state["finished"] += 1

    started = perf_counter()
    for _ in range(workers):
        start_new_thread(worker, ())
    rounds = (count + workers - 1) // workers
    deadline = started + timeout * (rounds + 1) + 5
    # The main greenlet must keep yielding so the hub can accept and serve.
    while state["finished"] < workers and perf_counter() < deadline:
        gevent.sleep(0.005)
        leave_if_forked_child()
        _dump_stall(state, path, timeout, count)
    wall = perf_counter() - started
    _dump_stall(state, path, timeout, count)  # the handlers stay parked until the server stops
    for i, result in enumerate(results):
        if result is None:
            if state.get("stalled"):
                results[i] = (None, None, _NOT_SENT)
            else:
                results[i] = (None, None, "not finished before the probe's deadline")
    return wall, results


_STALLED = set()  # paths whose stall was dumped: once per path is what a report needs


def _dump_stall(state, path, timeout, count):
    """Requests stopped completing while the process lives on: what every greenlet and thread
    is waiting for, taken now, while the handlers are still parked."""
    if not state.get("stalled") or path in _STALLED:
        return
    _STALLED.add(path)
    greenlets, threads = dump(REQUEST_CODES)
    emit(
        "stalled",
        path=path,
        timeout=timeout,
        requests=count,
        greenlets=greenlets,
        threads=threads,
    )


def serve(app) -> None:
    """One request alone, then the batch, per path of the spec's ``serve``; ``serve`` events."""
    settings = S.spec.get("serve") or {}
    paths = settings.get("paths") or []
    if not paths:
        return
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and getattr(patcher, "already_patched", None):
        emit(
            "serve",
            skipped="eventlet has monkey-patched this process; serving with gevent.pywsgi would "
            "mix the two hubs",
        )
        return
    import gevent.pywsgi

    count = int(settings.get("requests", 20))
    concurrency = int(settings.get("concurrency", 10))
    timeout = float(settings.get("request_timeout", 10))
    error_log = _ErrorLog()
    server = gevent.pywsgi.WSGIServer(
        ("127.0.0.1", 0), _wrap_wsgi(app), log=None, error_log=error_log
    )
    server.start()  # binds and accepts in the hub; serve_forever() would only add a wait
    try:
        port = server.server_port
        for path in paths:
            S.serve_path = path
            _, single = _run_batch(port, path, 1, 1, timeout)
            wall, results = _run_batch(port, path, count, concurrency, timeout)
            statuses = {}
            for _latency, status, error in results:
                key = "none" if status is None else str(status)
                if error == _NOT_SENT:
                    key = "not-sent"
                statuses[key] = statuses.get(key, 0) + 1
            emit(
                "serve",
                port=port,
                path=path,
                single=single[0][0],
                single_status=single[0][1],
                single_error=single[0][2],
                requests=count,
                concurrency=concurrency,
                wall=round(wall, 6),
                latencies=[r[0] for r in results],
                statuses=statuses,
                errors=[r[2] for r in results if r[2]],
                server_errors=list(error_log.lines),
            )
            del error_log.lines[:]
    finally:
        S.serve_path = None
        try:
            server.stop(timeout=1)
        except Exception:
            pass
