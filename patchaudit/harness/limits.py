"""The file-descriptor budget of a benchmark, and the Linux settings that shape loopback load.

Client and server run in separate processes and each has its own RLIMIT_NOFILE, so the process
that needs most is the one holding every connection at once: the server (or ab/wrk, a single
process) with one descriptor per connection. The built-in client spreads the connections over
its processes and needs less. Without enough descriptors accept()/connect() fail with EMFILE,
which would be measured as the server's fault.
"""

from __future__ import annotations

import resource

from .._system import descriptors_needed, ephemeral_ports, nofile_limits, read_sysctl

__all__ = ["SYSCTLS", "ephemeral_ports", "fd_budget", "fd_problem", "raise_nofile", "sysctls"]

# The kernel settings recorded with every result, by the names the JSON document uses.
SYSCTLS = {
    "somaxconn": "net.core.somaxconn",
    "tcp_max_syn_backlog": "net.ipv4.tcp_max_syn_backlog",
    "ip_local_port_range": "net.ipv4.ip_local_port_range",
    "tcp_tw_reuse": "net.ipv4.tcp_tw_reuse",
    "tcp_syncookies": "net.ipv4.tcp_syncookies",
    "file_max": "fs.file-max",
}


def fd_budget(concurrency: int) -> tuple[int, int, int]:
    """(descriptors one process needs for ``concurrency`` connections, soft limit, hard limit)."""
    soft, hard = nofile_limits()
    return descriptors_needed(concurrency), _finite(soft), _finite(hard)


def _finite(limit: int) -> int:
    return 2**31 - 1 if limit == resource.RLIM_INFINITY else limit


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); return both."""
    soft, hard = nofile_limits()
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    soft, hard = nofile_limits()
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
    for name, key in SYSCTLS.items():
        try:
            values[name] = read_sysctl(key)
        except OSError:
            values[name] = None
    return values
