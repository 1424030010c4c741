"""`patchaudit bench`: the same WSGI page served patched (gevent, eventlet) and unpatched
(threads), loaded by a multi-process gevent client (closed model, or open with ``--rate``), ab,
wrk or locust (a master and workers), over a range of concurrency or of request rates.

For the CLI: :func:`add_bench_arguments` and :func:`run_bench`. For other commands (``demo``):
:func:`start_server` (a context manager yielding ``(host, port)``), :func:`run_load` (returns a
:class:`RunResult`) and :func:`fd_budget`. ``python -m patchaudit.harness`` runs the command on
its own.
"""

from __future__ import annotations

from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, add_bench_arguments, run_bench
from .client import LoadInterrupted, run_load
from .limits import fd_budget, raise_nofile
from .servers import SERVER_MODES, ServerError, start_server
from .stats import ERROR_KINDS, LiveStats, RunResult

SERVERS = tuple(SERVER_MODES)

__all__ = [
    "add_bench_arguments",
    "ERROR_KINDS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "fd_budget",
    "LiveStats",
    "LoadInterrupted",
    "raise_nofile",
    "run_bench",
    "run_load",
    "RunResult",
    "ServerError",
    "SERVERS",
    "start_server",
]
