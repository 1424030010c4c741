"""Start and stop the servers that `patchaudit bench` measures, each in its own process group.

The child (``_serve.py``, run in safe-path mode) runs under a supervisor
(:func:`patchaudit._process.spawn`): it binds the socket itself and reports the port through a
pipe; the server is ready when an HTTP request to it gets a status line. Stopping sends SIGTERM
to the whole group (gunicorn and gevent-multi have worker processes; the supervisor ignores it),
then kills the group after a grace period. If bench dies, the supervisor ends the group.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .._process import Child, spawn
from ._children import python_command

SERVE_SCRIPT = Path(__file__).with_name("_serve.py")

# kind -> whether its process runs monkey-patched (the "mode" column of the results)
SERVER_MODES = {
    "gevent": "patched",
    "threaded": "unpatched",
    "eventlet": "patched",
    "gunicorn-gevent": "patched",
    "gunicorn-gthread": "unpatched",
    "gevent-multi": "patched",
}
# The Python packages each kind imports, to name the missing one before starting.
SERVER_PACKAGES = {
    "gevent": "gevent",
    "threaded": "paste",
    "eventlet": "eventlet",
    "gunicorn-gevent": "gunicorn",
    "gunicorn-gthread": "gunicorn",
    "gevent-multi": "gevent",
}
MULTI_PROCESS = ("gunicorn-gevent", "gunicorn-gthread", "gevent-multi")


class ServerError(Exception):
    """A server could not be started; the message is one line plus the child's stderr tail."""


def check_loopback(host: str) -> None:
    """Every byte of load stays on this machine."""
    try:
        packed = socket.inet_aton(host)
    except OSError:
        raise ServerError(f"host {host!r} is not an IPv4 loopback address") from None
    if packed[0] != 127:
        raise ServerError(f"host {host} is not a loopback address (127.0.0.0/8): refusing")


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


@dataclass
class ServerProcess:
    kind: str
    host: str
    port: int
    child: Child
    stderr: IO[bytes]  # an anonymous temporary file: nothing to remove however we end

    @property
    def pid(self) -> int:
        """The supervisor's pid, which is also the server's process-group id."""
        return self.child.pid

    def stderr_tail(self, lines: int = 12) -> str:
        try:
            fd = self.stderr.fileno()
            size = os.fstat(fd).st_size
            tail = min(size, 64 * 1024)  # several processes may each have written 256 KB
            text = os.pread(fd, tail, size - tail).decode(errors="replace")
        except (OSError, ValueError):  # ValueError: already closed
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the group, then kill whatever is left after ``grace`` seconds."""
        self.child.signal_group(signal.SIGTERM)
        try:
            self.child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Always: the supervisor kills leftovers when the server exits, but a server that
        # ignored SIGTERM is still running, and kill() also waits until the group is gone.
        self.child.kill()

    def close(self) -> None:
        """Release the stderr file (after :meth:`stop`)."""
        self.stderr.close()


def spawn_server(
    kind: str,
    app_spec: str | None = None,
    concurrency: int = 100,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int | None = None,
    backlog: int | None = None,
    cpus: set[int] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    start_timeout: float = 60.0,
    path: str = "/",
    deadline: float | None = None,
) -> ServerProcess:
    """Start a server and wait until it answers HTTP; raise ServerError if it does not.

    ``deadline``: the most seconds it may live (its supervisor ends it after that, even if
    nobody asks); None for as long as this process lives.
    """
    if kind not in SERVER_MODES:
        raise ServerError(f"unknown server {kind!r} (choose from {', '.join(SERVER_MODES)})")
    check_loopback(host)
    read_fd, write_fd = os.pipe()
    stderr_file = tempfile.TemporaryFile(prefix=f"patchaudit-{kind}-", suffix=".stderr")
    config = {
        "kind": kind,
        "app": app_spec,
        "concurrency": concurrency,
        "workers": workers or default_workers(),
        "host": host,
        "port": port,
        "backlog": backlog,
        "cpus": sorted(cpus) if cpus else None,
        "cwd": str(Path(cwd or os.getcwd()).resolve()),
        "ready_fd": write_fd,
    }
    try:
        child = spawn(
            [*python_command(script=SERVE_SCRIPT), json.dumps(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            pass_fds=(write_fd,),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            deadline=deadline,
        )
    except BaseException:
        os.close(read_fd)
        stderr_file.close()
        raise
    finally:
        os.close(write_fd)
    server = ServerProcess(kind, host, 0, child, stderr_file)
    try:
        server.port = _read_port(read_fd, child, start_timeout)
        _wait_http(host, server.port, path, child, start_timeout)
    except ServerError as exc:
        server.stop(grace=1.0)
        tail = server.stderr_tail()
        server.close()
        raise ServerError(f"{exc}" + (f"; its stderr:\n{tail}" if tail else "")) from None
    except BaseException:
        server.stop(grace=1.0)
        server.close()
        raise
    finally:
        os.close(read_fd)
    return server


def _read_port(read_fd: int, process: Child, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], 0.1)
        if ready:
            chunk = os.read(read_fd, 64)
            data += chunk
            if data.endswith(b"\n"):
                return int(data)
            if not chunk:
                break
        elif process.poll() is not None:
            break
    code = process.poll()
    if code is not None:
        raise ServerError(f"server exited with status {code} before listening")
    raise ServerError(f"server did not start listening within {timeout:g}s")


def _wait_http(host: str, port: int, path: str, process: Child, timeout: float) -> None:
    """Ready = a status line came back (gunicorn listens before its workers have booted)."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"server exited with status {process.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=2.0) as sock:
                sock.sendall(request)
                if sock.recv(16).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise ServerError(f"server on {host}:{port} did not answer HTTP within {timeout:g}s")


@contextmanager
def start_server(
    kind: str,
    app_spec: str | None = None,
    concurrency: int = 100,
    *,
    grace: float = 5.0,
    **options: Any,
) -> Iterator[tuple[str, int]]:
    """``with start_server("gevent") as (host, port): ...``; stopped on exit, whatever happens.

    Options: host, port (0 = ephemeral), workers, backlog, cpus, cwd, start_timeout, path,
    deadline.
    """
    server = spawn_server(kind, app_spec, concurrency, **options)
    try:
        yield server.host, server.port
    finally:
        server.stop(grace)
        server.close()
