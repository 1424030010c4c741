"""What this machine allows a loopback load test: descriptors, local ports, kernel settings.

One reader and one set of formulas for `patchaudit doctor` (which explains them) and
`patchaudit bench` (whose preflight refuses a run that cannot work), so both give the same
answer on one machine. ``proc_root`` lets tests point at a fake ``/proc`` tree.
"""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = [
    "FD_MARGIN",
    "PROC",
    "descriptors_needed",
    "ephemeral_ports",
    "nofile_limits",
    "port_range",
    "read_sysctl",
    "reserved_ports",
    "sysctl_path",
]

PROC = Path("/proc")
#: Descriptors a process needs besides its connections: stdio, the listening socket, the event
#: loop's epoll and wake-up descriptors, log files (a gevent WSGI server holds 9 at rest).
FD_MARGIN = 128


def sysctl_path(key: str, proc_root: Path = PROC) -> Path:
    """``net.core.somaxconn`` -> ``/proc/sys/net/core/somaxconn``."""
    return proc_root / "sys" / key.replace(".", "/")


def read_sysctl(key: str, proc_root: Path = PROC) -> str:
    """The setting's text with whitespace collapsed; raises ``OSError`` when unreadable."""
    text = sysctl_path(key, proc_root).read_text(encoding="utf-8", errors="replace")
    return " ".join(text.split())


def nofile_limits() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE; ``resource.RLIM_INFINITY`` where unlimited."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def descriptors_needed(concurrency: int, *, same_process: bool = False) -> int:
    """Descriptors one process needs for ``concurrency`` connections.

    One per connection, plus :data:`FD_MARGIN`; two per connection when client and server run
    in one process (each holds one end). The bench client and its servers are separate
    processes, so for them the server's share is the one that counts.
    """
    return (2 if same_process else 1) * concurrency + FD_MARGIN


def reserved_ports(text: str, low: int, high: int) -> int:
    """How many ports of low..high ``ip_local_reserved_ports`` (``8080,9000-9010``) takes out."""
    taken: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            start, end = int(first), int(last or first)
        except ValueError:
            continue
        taken.update(range(max(start, low), min(end, high) + 1))
    return len(taken)


def port_range(proc_root: Path = PROC) -> tuple[int, int, int]:
    """(low, high, reserved) of the ephemeral port range; ``OSError``/``ValueError`` if unknown."""
    text = read_sysctl("net.ipv4.ip_local_port_range", proc_root)
    low, high = (int(part) for part in text.split())
    try:
        reserved_text = read_sysctl("net.ipv4.ip_local_reserved_ports", proc_root)
    except OSError:
        reserved_text = ""
    return low, high, reserved_ports(reserved_text, low, high) if reserved_text else 0


def ephemeral_ports(proc_root: Path = PROC) -> int | None:
    """How many local ports a client can connect from (None if unknown)."""
    try:
        low, high, reserved = port_range(proc_root)
    except (OSError, ValueError):
        return None
    return high - low + 1 - reserved
