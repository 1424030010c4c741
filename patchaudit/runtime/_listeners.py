"""Which TCP ports a process tree listens on, read from ``/proc`` (Linux).

``patchaudit run`` drives requests at whatever the real launcher bound, whether it is Python
(gunicorn, a plain script) or not (uWSGI's C core binds before any Python runs), so the sockets
are found from the outside: a process's ``/proc/PID/fd`` links name socket inodes, and
``/proc/PID/net/tcp[6]`` lists the listening ones with their addresses. Only loopback and
wildcard addresses count: requests go to 127.0.0.1 and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["listening_ports"]

_LISTEN = "0A"
# Addresses (as /proc writes them) that 127.0.0.1 reaches: 127.0.0.1, 0.0.0.0, ::, ::1 and
# the v4-mapped forms of the first two.
_REACHABLE = frozenset(
    {
        "0100007F",
        "00000000",
        "00000000000000000000000000000000",
        "00000000000000000000000001000000",
        "0000000000000000FFFF00000100007F",
        "0000000000000000FFFF000000000000",
    }
)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(os.path.join(folder, name))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def _listening(pid: int) -> dict[str, int]:
    """{inode: port} of the listening TCP sockets in ``pid``'s network namespace."""
    found: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            address, _, port = fields[1].partition(":")
            if address.upper() in _REACHABLE:
                found[fields[9]] = int(port, 16)
    return found


def listening_ports(pids: Iterable[int]) -> dict[int, int]:
    """{port: lowest pid holding it} for the loopback-reachable TCP listeners of ``pids``."""
    ports: dict[int, int] = {}
    tables: dict[str, int] = {}
    for pid in sorted(pids):
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        if not tables:  # one namespace for the whole tree: read it once
            tables = _listening(pid)
        for inode in inodes & tables.keys():
            ports.setdefault(tables[inode], pid)
    return ports
