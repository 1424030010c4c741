"""`patchaudit doctor`: is this machine ready for a loopback load test?

The post "gevent: the Good, the Bad, the Ugly" (Mixpanel) ends with a list of Linux
tweaks its author needed past ~500 connections per second, all caused by client and server
talking over 127.0.0.1. Each tweak is a :class:`Check` here: the setting is read from ``/proc``
(or ``resource.getrlimit``), compared with what the planned run needs, and reported with the
reason it matters and the exact command that would change it. Doctor never changes a setting.

Statuses: ``OK``; ``WARN`` (the run will likely hit this); ``FAIL`` (it cannot work as planned);
``INFO`` (worth knowing, nothing to do); ``N/A`` (not applicable here, with the reason, e.g. not
Linux or a missing file). :func:`run_doctor` returns 1 when any check is WARN or FAIL, else 0.

API: :func:`add_doctor_arguments` / :func:`run_doctor` for the command line, and the pure
:func:`run_checks`, whose ``proc_root`` lets tests point at a fake ``/proc`` tree.
"""

from __future__ import annotations

from .._system import FD_MARGIN
from . import _checks  # noqa: F401  (registers every check in CHECKS)
from ._command import add_doctor_arguments, run_doctor
from ._model import (
    CHECKS,
    DEFAULT_BACKLOG,
    DEFAULT_CONCURRENCY,
    EXIT_OK,
    EXIT_WARN,
    JSON_VERSION,
    STATUSES,
    TIME_WAIT_SECONDS,
    Check,
    CheckResult,
    exit_code,
    machine_info,
    run_checks,
)
from ._render import render_json, render_table

__all__ = [
    "CHECKS",
    "DEFAULT_BACKLOG",
    "DEFAULT_CONCURRENCY",
    "EXIT_OK",
    "EXIT_WARN",
    "FD_MARGIN",
    "JSON_VERSION",
    "STATUSES",
    "TIME_WAIT_SECONDS",
    "Check",
    "CheckResult",
    "add_doctor_arguments",
    "exit_code",
    "machine_info",
    "render_json",
    "render_table",
    "run_checks",
    "run_doctor",
]
