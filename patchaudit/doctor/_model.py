"""The doctor's model: statuses, the check registry, reading settings, running the checks."""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._console import EXIT_FINDINGS as EXIT_WARN  # a WARN or FAIL is doctor's "finding"
from .._console import EXIT_OK
from .._system import read_sysctl, sysctl_path

OK, WARN, FAIL, INFO, NA = "OK", "WARN", "FAIL", "INFO", "N/A"
STATUSES = (OK, WARN, FAIL, INFO, NA)

#: Connections the run is planned for when ``--concurrency`` is not given.
DEFAULT_CONCURRENCY = 1000
#: The listen backlog assumed for the server under test when ``--backlog`` is not given: 128 is
#: the default of gevent's StreamServer (the post's server) and of Python's ``socket.listen()``.
#: Others differ (gunicorn 2048, eventlet 50, Paste 5): pass the server's real value.
DEFAULT_BACKLOG = 128
#: TCP_TIMEWAIT_LEN in include/net/tcp.h: a compile-time constant, no sysctl changes it.
TIME_WAIT_SECONDS = 60
#: Seconds conntrack keeps a closed TCP connection (default of nf_conntrack_tcp_timeout_time_wait).
CONNTRACK_TIME_WAIT_DEFAULT = 120
JSON_VERSION = 1


# --- model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One row of the report. ``readings`` maps each setting read to its raw text (whitespace
    collapsed), e.g. ``{"net.core.somaxconn": "4096"}``; ``fix`` is a shell command (alternatives
    on separate lines), or None when there is nothing to change."""

    id: str
    title: str
    status: str
    value: str
    needed: str | None
    why: str
    fix: str | None
    readings: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Outcome:
    status: str
    value: str
    needed: str | None = None
    fix: str | None = None


@dataclass
class _Context:
    concurrency: int
    backlog: int
    rate: float | None
    same_process: bool
    proc_root: Path
    readings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """A catalogue entry: what is checked, why it matters, and the function that judges it."""

    id: str
    title: str
    why: str
    evaluate: Callable[[_Context], _Outcome]
    needs_proc: bool = True


class _Unavailable(Exception):
    """A setting could not be read; the check becomes N/A with this reason."""


CHECKS: list[Check] = []


def _check(id: str, title: str, why: str, *, needs_proc: bool = True):
    def register(evaluate: Callable[[_Context], _Outcome]) -> Callable[[_Context], _Outcome]:
        CHECKS.append(Check(id, title, " ".join(why.split()), evaluate, needs_proc))
        return evaluate

    return register


# --- reading /proc ---------------------------------------------------------------------------


def _read(ctx: _Context, key: str) -> str:
    path = sysctl_path(key, ctx.proc_root)
    try:
        text = read_sysctl(key, ctx.proc_root)
    except FileNotFoundError:
        raise _Unavailable(f"{path} does not exist") from None
    except PermissionError:
        raise _Unavailable(f"{path} is not readable (permission denied)") from None
    except OSError as exc:
        raise _Unavailable(f"cannot read {path}: {exc.strerror or exc}") from None
    ctx.readings[key] = text
    return text


def _read_ints(ctx: _Context, key: str, count: int = 1) -> list[int]:
    text = _read(ctx, key)
    try:
        numbers = [int(part) for part in text.split()]
    except ValueError:
        numbers = []
    if len(numbers) != count:
        raise _Unavailable(f"unexpected content in {sysctl_path(key, ctx.proc_root)}: {text!r}")
    return numbers


def _read_int(ctx: _Context, key: str) -> int:
    return _read_ints(ctx, key)[0]


def _optional_int(ctx: _Context, key: str) -> int | None:
    try:
        return _read_int(ctx, key)
    except _Unavailable:
        return None


def _kernel_release(ctx: _Context) -> str:
    try:
        return _read(ctx, "kernel.osrelease")
    except _Unavailable:
        return platform.release()


def _kernel_version(release: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else None


def _syn_retry_times(linear: int, count: int = 3) -> list[int]:
    """When a client resends an unanswered SYN, in seconds after the first: the initial RTO is
    1 s (3 s before Linux 2.6.39), kept for ``tcp_syn_linear_timeouts`` retries (Linux 6.x;
    default 4), then doubled each time."""
    times, rto, elapsed = [], 1, 0
    for attempt in range(1, count + 1):
        elapsed += rto
        times.append(elapsed)
        if attempt >= linear:
            rto *= 2
    return times


def _sysctl_fix(key: str, value: object) -> str:
    text = str(value)
    return f'sudo sysctl -w {key}="{text}"' if " " in text else f"sudo sysctl -w {key}={text}"


def _n(number: float) -> str:
    return f"{number:,.0f}"


# --- running ---------------------------------------------------------------------------------


def run_checks(
    concurrency: int,
    backlog: int = DEFAULT_BACKLOG,
    proc_root: Path = Path("/proc"),
    *,
    rate: float | None = None,
    same_process: bool = False,
) -> list[CheckResult]:
    """Every check of :data:`CHECKS`, in order, against ``proc_root``; never raises for an
    unreadable setting (that check is N/A, with the reason in ``value``).

    ``concurrency`` is the planned number of simultaneous connections, ``backlog`` the listen
    backlog of the benchmarked server, ``rate`` the planned new connections per second (None:
    unknown), ``same_process`` whether client and server run in one process.
    """
    if concurrency < 1 or backlog < 1:
        raise ValueError("concurrency and backlog must be at least 1")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    proc_root = Path(proc_root)
    has_proc = (proc_root / "sys").is_dir()
    results = []
    for check in CHECKS:
        ctx = _Context(concurrency, backlog, rate, same_process, proc_root)
        if check.needs_proc and not has_proc:
            where = "not Linux" if not sys.platform.startswith("linux") else "no proc tree"
            outcome = _Outcome(NA, f"{where}: {proc_root / 'sys'} does not exist")
        else:
            try:
                outcome = check.evaluate(ctx)
            except _Unavailable as exc:
                outcome = _Outcome(NA, str(exc))
        results.append(
            CheckResult(
                id=check.id,
                title=check.title,
                status=outcome.status,
                value=outcome.value,
                needed=outcome.needed,
                why=check.why,
                fix=outcome.fix,
                readings=dict(ctx.readings),
            )
        )
    return results


def exit_code(results: Iterable[CheckResult]) -> int:
    """1 when any check is WARN or FAIL, else 0."""
    return EXIT_WARN if any(r.status in (WARN, FAIL) for r in results) else EXIT_OK


def machine_info() -> dict[str, Any]:
    """``{"kernel", "cores", "python"}`` for the report header and the JSON document."""
    uname = os.uname() if hasattr(os, "uname") else None
    kernel = f"{uname.sysname} {uname.release} {uname.machine}" if uname else platform.platform()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return {"kernel": kernel, "cores": cores, "python": python}
