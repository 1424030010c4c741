"""The process table read from ``/proc``: who is alive, in which group, with which parent.

:mod:`._process` uses it to find what a child left behind (its group, re-parented orphans,
processes carrying its marker); ``patchaudit run`` uses it to see what a launcher started.
Everything returns None or empty where ``/proc`` is unavailable.
"""

from __future__ import annotations

import os

from . import _supervise

__all__ = ["group_parents", "live_group_members", "proc_table", "processes_with_marker"]


def live_group_members(pgid: int) -> list[int] | None:
    """Pids in process group ``pgid`` that are not zombies; None where /proc is unavailable."""
    table = proc_table()
    if table is None:
        return None
    return [pid for pid, (_ppid, group, zombie) in table.items() if group == pgid and not zombie]


def group_parents(pgid: int) -> dict[int, int]:
    """{pid: parent pid} of the live members of process group ``pgid`` (empty without /proc)."""
    table = proc_table() or {}
    return {pid: ppid for pid, (ppid, pg, dead) in table.items() if pg == pgid and not dead}


def processes_with_marker(marker: str) -> list[int]:
    """Live pids whose environment carries ``marker`` (ours, or one a test set)."""
    needle = f"{_supervise.MARKER_VAR}={marker}".encode()
    me = os.getpid()
    return [
        pid
        for pid, (_ppid, _group, zombie) in (proc_table() or {}).items()
        if not zombie and pid != me and _supervise._has_marker(pid, needle)
    ]


def proc_table() -> dict[int, tuple[int, int, bool]] | None:
    """{pid: (ppid, pgid, is_zombie)} of every process; None where /proc is unavailable."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    table = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3:
            dead = fields[0] == b"Z" and not threads_left(entry)
            table[int(entry)] = (int(fields[1]), int(fields[2]), dead)
    return table


def threads_left(pid: str) -> bool:
    """A leader shows "Z" as soon as its own thread exits; the others may still hold its
    sockets open for a moment, so the process is dead only when no thread is left."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False
