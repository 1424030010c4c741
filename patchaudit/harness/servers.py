"""Start and stop the servers that `patchaudit bench` measures, each in its own process group.

The child (``_serve.py``) binds the socket itself and reports the port through a pipe; the
server is ready when an HTTP request to it gets a status line. Stopping sends SIGTERM to the
whole group (gunicorn and gevent-multi have worker processes), then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    process: subprocess.Popen
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_tail(self, lines: int = 12) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left after ``grace`` seconds."""
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Always: the leader may be gone while its workers (gunicorn, gevent-multi) linger.
        _signal_group(self.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel did not deliver SIGKILL
            pass
        _wait_group_gone(self.pid, timeout=5.0)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


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
) -> ServerProcess:
    """Start a server and wait until it answers HTTP; raise ServerError if it does not."""
    if kind not in SERVER_MODES:
        raise ServerError(f"unknown server {kind!r} (choose from {', '.join(SERVER_MODES)})")
    check_loopback(host)
    read_fd, write_fd = os.pipe()
    stderr_file = tempfile.NamedTemporaryFile(
        prefix=f"patchaudit-{kind}-", suffix=".stderr", delete=False
    )
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
        "parent": os.getpid(),
    }
    try:
        process = subprocess.Popen(
            [sys.executable, str(SERVE_SCRIPT), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            pass_fds=(write_fd,),
            start_new_session=True,  # its own process group: Ctrl-C is ours to handle
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        os.close(write_fd)
        stderr_file.close()
    server = ServerProcess(kind, host, 0, process, Path(stderr_file.name))
    try:
        server.port = _read_port(read_fd, process, start_timeout)
        _wait_http(host, server.port, path, process, start_timeout)
    except ServerError as exc:
        server.stop(grace=1.0)
        tail = server.stderr_tail()
        cleanup(server)
        raise ServerError(f"{exc}" + (f"; its stderr:\n{tail}" if tail else "")) from None
    except BaseException:
        server.stop(grace=1.0)
        cleanup(server)
        raise
    finally:
        os.close(read_fd)
    return server


def cleanup(server: ServerProcess) -> None:
    try:
        server.stderr_path.unlink()
    except OSError:
        pass


def _read_port(read_fd: int, process: subprocess.Popen, timeout: float) -> int:
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


def _wait_http(host: str, port: int, path: str, process: subprocess.Popen, timeout: float) -> None:
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
    **options,
) -> Iterator[tuple[str, int]]:
    """``with start_server("gevent") as (host, port): ...``; stopped on exit, whatever happens.

    Options: host, port (0 = ephemeral), workers, backlog, cpus, cwd, start_timeout, path.
    """
    server = spawn_server(kind, app_spec, concurrency, **options)
    try:
        yield server.host, server.port
    finally:
        server.stop(grace)
        cleanup(server)
