"""The file-descriptor budget of a benchmark, and the Linux settings that shape loopback load.

Client and server run in separate processes and each has its own RLIMIT_NOFILE, so the process
that needs most is the one holding every connection at once: the server (or ab/wrk, a single
process) with one descriptor per connection. The built-in client spreads the connections over
its processes and needs less. Without enough descriptors accept()/connect() fail with EMFILE,
which would be measured as the server's fault.
"""

from __future__ import annotations

import resource
from pathlib import Path

# Listening socket, epoll, pipes, log files, imported extension modules... with room to spare.
FD_MARGIN = 128

SYSCTLS = {
    "somaxconn": "/proc/sys/net/core/somaxconn",
    "tcp_max_syn_backlog": "/proc/sys/net/ipv4/tcp_max_syn_backlog",
    "ip_local_port_range": "/proc/sys/net/ipv4/ip_local_port_range",
    "tcp_tw_reuse": "/proc/sys/net/ipv4/tcp_tw_reuse",
    "tcp_syncookies": "/proc/sys/net/ipv4/tcp_syncookies",
    "file_max": "/proc/sys/fs/file-max",
}


def fd_budget(concurrency: int) -> tuple[int, int, int]:
    """(descriptors one process needs for ``concurrency`` connections, soft limit, hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return concurrency + FD_MARGIN, _finite(soft), _finite(hard)


def _finite(limit: int) -> int:
    return 2**31 - 1 if limit == resource.RLIM_INFINITY else limit


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); return both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _finite(soft), _finite(hard)


def fd_problem(concurrency: int) -> str | None:
    """One line saying why ``concurrency`` does not fit the descriptor limit, or None."""
    needed, soft, hard = fd_budget(concurrency)
    if needed <= soft:
        return None
    target = max(65536, needed)
    return (
        f"concurrency {concurrency} needs about {needed} open files per process, but the limit "
        f"is {soft} (hard limit {hard}): raise it with `ulimit -n {target}` (as root, or after "
        f"adding `* hard nofile {target}` to /etc/security/limits.conf) or lower --concurrency"
    )


def sysctls() -> dict[str, str | None]:
    """The kernel settings that matter for a loopback benchmark (None where unreadable)."""
    values: dict[str, str | None] = {}
    for name, path in SYSCTLS.items():
        try:
            values[name] = " ".join(Path(path).read_text().split())
        except OSError:
            values[name] = None
    return values


def ephemeral_ports() -> int | None:
    """How many local ports a client can connect from (None if unknown)."""
    value = sysctls()["ip_local_port_range"]
    if not value:
        return None
    low, high = (int(part) for part in value.split())
    return high - low + 1
