"""`patchaudit doctor`: is this machine ready for a loopback load test?

The seed post ("gevent: the Good, the Bad, the Ugly", Mixpanel 2010) ends with a list of Linux
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

import argparse
import io
import json
import math
import os
import platform
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

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

OK, WARN, FAIL, INFO, NA = "OK", "WARN", "FAIL", "INFO", "N/A"
STATUSES = (OK, WARN, FAIL, INFO, NA)
EXIT_OK, EXIT_WARN = 0, 1

#: Connections the run is planned for when ``--concurrency`` is not given.
DEFAULT_CONCURRENCY = 1000
#: The listen backlog assumed for the server under test when ``--backlog`` is not given: 128 is
#: the default of gevent's StreamServer (the seed's server) and of Python's ``socket.listen()``.
#: Others differ (gunicorn 2048, eventlet 50, Paste 5): pass the server's real value.
DEFAULT_BACKLOG = 128
#: Descriptors a process needs besides its connections: stdio, the listening socket, the event
#: loop's epoll and wake-up descriptors, log files (a gevent WSGI server holds 9 at rest). The
#: same figure as the bench harness uses, so both ask for the same limit.
FD_MARGIN = 128
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


def _sysctl_path(key: str) -> str:
    """``net.core.somaxconn`` -> ``sys/net/core/somaxconn`` (relative to the proc root)."""
    return "sys/" + key.replace(".", "/")


def _read(ctx: _Context, key: str) -> str:
    path = ctx.proc_root / _sysctl_path(key)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise _Unavailable(f"{path} does not exist") from None
    except PermissionError:
        raise _Unavailable(f"{path} is not readable (permission denied)") from None
    except OSError as exc:
        raise _Unavailable(f"cannot read {path}: {exc.strerror or exc}") from None
    text = " ".join(text.split())
    ctx.readings[key] = text
    return text


def _read_ints(ctx: _Context, key: str, count: int = 1) -> list[int]:
    text = _read(ctx, key)
    try:
        numbers = [int(part) for part in text.split()]
    except ValueError:
        numbers = []
    if len(numbers) != count:
        raise _Unavailable(f"unexpected content in {ctx.proc_root / _sysctl_path(key)}: {text!r}")
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


def _reserved_ports(text: str, low: int, high: int) -> int:
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


# --- the checks ------------------------------------------------------------------------------


@_check(
    "RLIMIT_NOFILE",
    "Open file descriptors",
    """Each process can hold only as many descriptors as its soft limit, and with ab and the
    server on one host each holds one end of every connection (2 per connection host-wide);
    the seed needed `ulimit -n 16384` and a `* hard nofile 16384` line in
    /etc/security/limits.conf to go past ~4000 connections.""",
    needs_proc=False,
)
def _nofile(ctx: _Context) -> _Outcome:
    try:
        import resource
    except ImportError:
        raise _Unavailable(f"no resource limits on {sys.platform}") from None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    ctx.readings["RLIMIT_NOFILE.soft"] = "unlimited" if soft == infinity else str(soft)
    ctx.readings["RLIMIT_NOFILE.hard"] = "unlimited" if hard == infinity else str(hard)
    ends = 2 if ctx.same_process else 1
    need = ends * ctx.concurrency + FD_MARGIN
    formula = (
        f"{ends} × {_n(ctx.concurrency)} connections + {FD_MARGIN}"
        if ends == 2
        else f"{_n(ctx.concurrency)} connections + {FD_MARGIN}"
    )
    layout = "client and server in one process" if ctx.same_process else "per process"
    needed = f"≥ {_n(need)} ({formula}; {layout})"
    show = ctx.readings
    value = f"soft {show['RLIMIT_NOFILE.soft']}, hard {show['RLIMIT_NOFILE.hard']}"
    file_max = _optional_int(ctx, "fs.file-max")
    host_need = 2 * ctx.concurrency + 2 * FD_MARGIN
    if file_max is not None:
        value += f"; host-wide fs.file-max {_n(file_max)}"

    def fits(limit: int) -> bool:
        return limit == infinity or limit >= need

    if not fits(hard):
        nr_open = _optional_int(ctx, "fs.nr_open")
        lines = []
        if nr_open is not None and need > nr_open:
            lines.append(_sysctl_fix("fs.nr_open", need))
        lines += [
            f"sudo prlimit --pid $$ --nofile={need}:{need}   # this shell, now",
            f"# or for later logins, in /etc/security/limits.conf: * hard nofile {need}",
            f"# and: * soft nofile {need}   (systemd services: LimitNOFILE={need})",
        ]
        return _Outcome(
            FAIL,
            value + f": the hard limit is below {_n(need)}, and only root can raise it",
            needed,
            "\n".join(lines),
        )
    if not fits(soft):
        return _Outcome(
            WARN,
            value + ": the hard limit allows it, the soft one does not. `patchaudit bench` "
            f"raises the soft limit itself; your own tools need `ulimit -n {need}`",
            needed,
            f"ulimit -n {need}   # in the shell that starts ab/wrk and the server",
        )
    if file_max is not None and file_max < host_need:
        return _Outcome(
            WARN,
            value + f": the host as a whole needs {_n(host_need)} (2 per connection)",
            needed,
            _sysctl_fix("fs.file-max", host_need),
        )
    return _Outcome(OK, value, needed)


@_check(
    "net.ipv4.ip_local_port_range",
    "Ephemeral ports vs TIME_WAIT",
    f"""Each client connection takes an ephemeral port, and a port whose connection the client
    closed first stays in TIME_WAIT for {TIME_WAIT_SECONDS} s (TCP_TIMEWAIT_LEN, not
    tunable), so one destination (ip, port) gets at most ports / {TIME_WAIT_SECONDS} s new
    connections per second without reuse: the seed's wall 'past ~500 connections per second',
    and why it widened the range. Benchmarks without keep-alive (ab without -k) use one port
    per request.""",
)
def _port_range(ctx: _Context) -> _Outcome:
    low, high = _read_ints(ctx, "net.ipv4.ip_local_port_range", 2)
    ports = high - low + 1
    reserved_text = ""
    try:
        reserved_text = _read(ctx, "net.ipv4.ip_local_reserved_ports")
    except _Unavailable:
        pass
    reserved = _reserved_ports(reserved_text, low, high) if reserved_text else 0
    ports -= reserved
    plain = ports / TIME_WAIT_SECONDS
    value = f"{low}-{high}: {_n(ports)} ports"
    if reserved:
        value += f" ({reserved} reserved)"
    value += f" / {TIME_WAIT_SECONDS} s = {_n(plain)} new connections/s per destination"
    reuse = _optional_int(ctx, "net.ipv4.tcp_tw_reuse")
    timestamps = _optional_int(ctx, "net.ipv4.tcp_timestamps")
    delay_ms = _optional_int(ctx, "net.ipv4.tcp_tw_reuse_delay") or 1000
    reused = None
    if reuse in (1, 2) and timestamps != 0:
        reused = ports / (delay_ms / 1000)
        scope = "to loopback addresses" if reuse == 2 else "to any address"
        value += f"; {_n(reused)}/s {scope} with tcp_tw_reuse={reuse}"
    fix = _sysctl_fix("net.ipv4.ip_local_port_range", "1024 65535")
    needed = f"≥ {_n(ctx.concurrency)} ports (--concurrency)"
    if ctx.rate is not None:
        needed += f"; ≥ {_n(ctx.rate)} new connections/s (--rate)"
    if ports < ctx.concurrency:
        return _Outcome(
            WARN,
            value + f": too few ports for {_n(ctx.concurrency)} connections to one destination",
            needed,
            fix + "\n# or spread the connections over several server ports or addresses",
        )
    if ctx.rate is None:
        return _Outcome(INFO, value, needed + "; give --rate to check a planned rate", fix)
    if ctx.rate <= plain:
        return _Outcome(OK, value, needed)
    if reused is not None and ctx.rate <= reused:
        note = " (127.0.0.0/8 and ::1 only)" if reuse == 2 else ""
        return _Outcome(OK, value + f": enough only thanks to tcp_tw_reuse{note}", needed, fix)
    ports_needed = math.ceil(ctx.rate * TIME_WAIT_SECONDS)
    return _Outcome(
        WARN,
        value + f": {_n(ctx.rate)}/s needs {_n(ports_needed)} ports if the client closes first",
        needed,
        fix + "\n# or use keep-alive (ab -k), or several server ports or addresses",
    )


@_check(
    "net.ipv4.tcp_tw_reuse",
    "Reuse of TIME_WAIT ports",
    """Lets a new outgoing connection reuse a port still in TIME_WAIT once that is a second old
    (it needs tcp_timestamps), which lifts the ports / 60 s limit. 2, the default since Linux
    4.18, does it for loopback only, exactly the seed's 127.0.0.1 <-> 127.0.0.1 case; the seed
    'didn't need' it because it used tcp_tw_recycle.""",
)
def _tw_reuse(ctx: _Context) -> _Outcome:
    reuse = _read_int(ctx, "net.ipv4.tcp_tw_reuse")
    meaning = {0: "off", 1: "on for all connections", 2: "on for loopback only"}
    value = f"{reuse} ({meaning.get(reuse, 'unknown value')})"
    timestamps = _optional_int(ctx, "net.ipv4.tcp_timestamps")
    if timestamps is not None:
        value += f"; tcp_timestamps={timestamps}"
    delay = _optional_int(ctx, "net.ipv4.tcp_tw_reuse_delay")
    if delay is not None:
        value += f"; tcp_tw_reuse_delay={delay} ms"
    needed = "1 or 2, with tcp_timestamps on"
    if reuse == 0:
        return _Outcome(WARN, value, needed, _sysctl_fix("net.ipv4.tcp_tw_reuse", 2))
    if timestamps == 0:
        return _Outcome(
            WARN,
            value + ": reuse needs TCP timestamps, so it never happens",
            needed,
            _sysctl_fix("net.ipv4.tcp_timestamps", 1),
        )
    if reuse not in (1, 2):
        return _Outcome(WARN, value, needed, _sysctl_fix("net.ipv4.tcp_tw_reuse", 2))
    if reuse == 2:
        fix = _sysctl_fix("net.ipv4.tcp_tw_reuse", 1)
        return _Outcome(
            OK, value, needed, fix + "   # only if the bench targets a non-loopback address"
        )
    return _Outcome(OK, value, needed)


@_check(
    "net.ipv4.tcp_tw_recycle",
    "TIME_WAIT recycling (the seed's advice)",
    """The seed's 'echo 1 > tcp_tw_recycle' dropped SYNs from clients behind NAT, and from
    everyone once Linux 4.10 randomised timestamps per connection. Linux 4.12 removed it, so
    the seed's command fails today and tcp_tw_reuse is the knob left.""",
)
def _tw_recycle(ctx: _Context) -> _Outcome:
    release = _kernel_release(ctx)
    version = _kernel_version(release)
    try:
        recycle = _read_int(ctx, "net.ipv4.tcp_tw_recycle")
    except _Unavailable as missing:
        if not (ctx.proc_root / _sysctl_path("net.ipv4.tcp_tw_recycle")).exists() and (
            version is not None and version >= (4, 12)
        ):
            return _Outcome(
                INFO,
                f"absent: removed in Linux 4.12, this kernel is {release}",
                None,
                "# nothing to do; delete any net.ipv4.tcp_tw_recycle line from /etc/sysctl.conf "
                "and /etc/sysctl.d/",
            )
        raise _Unavailable(f"{missing} (kernel {release})") from None
    if recycle:
        return _Outcome(
            WARN,
            f"{recycle} (on; kernel {release}): connections from NATed clients get dropped",
            "0",
            _sysctl_fix("net.ipv4.tcp_tw_recycle", 0),
        )
    return _Outcome(OK, f"0 (off; kernel {release} still has it)", "0", None)


@_check(
    "net.ipv4.tcp_syncookies",
    "SYN cookies",
    """With 1 (the default) a listener whose SYN queue is full answers with cookies instead of
    dropping SYNs, and logs the seed's 'possible SYN flooding on port 10001. Sending
    cookies.'. The seed says to disable them (its command, echo 1, enables them); 0 turns
    overflows into dropped SYNs and retransmit delays, while the message really means the
    backlog is too small.""",
)
def _syncookies(ctx: _Context) -> _Outcome:
    cookies = _read_int(ctx, "net.ipv4.tcp_syncookies")
    meaning = {0: "off", 1: "on when a SYN queue overflows", 2: "always"}
    value = f"{cookies} ({meaning.get(cookies, 'unknown value')})"
    fix = _sysctl_fix("net.ipv4.tcp_syncookies", 1)
    if cookies == 1:
        return _Outcome(OK, value, "1")
    if cookies == 2:
        return _Outcome(INFO, value + ": every SYN gets a cookie; fine for a bench", "1", fix)
    return _Outcome(
        WARN, value + ": SYN queue overflows drop connections (see tcp_max_syn_backlog)", "1", fix
    )


@_check(
    "net.core.somaxconn",
    "Listen backlog cap",
    """listen(backlog) is silently capped at somaxconn, and when the accept queue is full the
    kernel drops the SYN and the client resends it only 1 s later, then 3 s (1 s apart with
    tcp_syn_linear_timeouts): latency spikes and the seed's 'connection timeouts'. ab -c N
    opens N connections at once.""",
)
def _somaxconn(ctx: _Context) -> _Outcome:
    cap = _read_int(ctx, "net.core.somaxconn")
    backlog, burst = ctx.backlog, ctx.concurrency
    queue = min(backlog, cap)
    target = max(backlog, burst)
    value = f"{cap}: accept queue = min(backlog {backlog}, {cap}) = {queue}"
    needed = f"≥ {_n(target)} (the larger of --backlog and --concurrency)"
    machine, server, fixes = [], [], []
    if cap < backlog:
        machine.append(f"the server's backlog {backlog} is cut to {cap}")
    elif cap < burst:
        machine.append(f"even a backlog of {burst} would be cut to {cap}")
    if backlog < burst:
        server.append(f"a burst of {_n(burst)} connects can overflow the server's {backlog}")
        fixes.append(
            f"# start the server with a backlog of {burst} (patchaudit bench --backlog {burst}, "
            f"gunicorn --backlog {burst}, gevent StreamServer(..., backlog={burst})), then: "
            f"patchaudit doctor --backlog {burst}"
        )
    if cap < target:
        fixes.insert(0, _sysctl_fix("net.core.somaxconn", target))
    if machine or server:
        value += ": " + "; ".join(machine + server)
    linear = _optional_int(ctx, "net.ipv4.tcp_syn_linear_timeouts")
    retries = ", ".join(f"{t} s" for t in _syn_retry_times(linear or 0))
    value += f". A dropped SYN is resent after {retries}"
    if machine:
        return _Outcome(WARN, value, needed, "\n".join(fixes))
    if server:  # the machine allows it; the server's own setting is the limit
        return _Outcome(INFO, value, needed, "\n".join(fixes))
    return _Outcome(OK, value, needed)


@_check(
    "net.ipv4.tcp_max_syn_backlog",
    "Half-open connection queue",
    """Only while SYN cookies are off, the kernel drops new SYNs once a listener's half-open
    queue reaches 3/4 of this value, with the same retransmit delays. With cookies on it is
    not consulted.""",
)
def _max_syn_backlog(ctx: _Context) -> _Outcome:
    limit = _read_int(ctx, "net.ipv4.tcp_max_syn_backlog")
    cookies = _optional_int(ctx, "net.ipv4.tcp_syncookies")
    need = math.ceil(ctx.concurrency * 4 / 3)
    if cookies:
        return _Outcome(
            INFO,
            f"{limit}: not consulted while tcp_syncookies={cookies}",
            f"≥ {_n(need)} only if syncookies are turned off",
        )
    state = "off" if cookies == 0 else "unreadable, assumed off"
    needed = f"≥ {_n(need)} (4/3 × {_n(ctx.concurrency)}, since drops start at 3/4)"
    value = f"{limit} (syncookies {state}): drops start at {_n(limit * 3 // 4)} half-open"
    if limit * 3 // 4 < ctx.concurrency:
        return _Outcome(WARN, value, needed, _sysctl_fix("net.ipv4.tcp_max_syn_backlog", need))
    return _Outcome(OK, value, needed)


@_check(
    "net.netfilter.nf_conntrack_max",
    "Connection tracking table",
    f"""While conntrack is active every connection, loopback included, takes an entry, kept
    {CONNTRACK_TIME_WAIT_DEFAULT} s after close, and a full table drops new connections. The
    seed: 'You'll quickly fill up the netfilter connection table'; raise nf_conntrack_max or
    turn the firewall off while testing.""",
)
def _conntrack(ctx: _Context) -> _Outcome:
    max_path = ctx.proc_root / _sysctl_path("net.netfilter.nf_conntrack_max")
    if not max_path.exists():
        return _Outcome(NA, f"conntrack not loaded ({max_path} does not exist)")
    limit = _read_int(ctx, "net.netfilter.nf_conntrack_max")
    count = _optional_int(ctx, "net.netfilter.nf_conntrack_count")
    linger = _optional_int(ctx, "net.netfilter.nf_conntrack_tcp_timeout_time_wait")
    linger = CONNTRACK_TIME_WAIT_DEFAULT if linger is None else linger
    used = count or 0
    need = used + ctx.concurrency
    formula = f"{_n(used)} in use + {_n(ctx.concurrency)} connections"
    if ctx.rate is not None:
        need += math.ceil(ctx.rate * linger)
        formula += f" + {_n(ctx.rate)}/s × {linger} s closed"
    value = f"{_n(limit)} entries, {_n(count) if count is not None else '?'} in use"
    if count == 0:
        value += " (tracking nothing in this network namespace so far)"
    needed = f"≥ {_n(need)} ({formula})"
    if limit < need:
        return _Outcome(WARN, value, needed, _sysctl_fix("net.netfilter.nf_conntrack_max", need))
    return _Outcome(OK, value, needed)


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


# --- output ----------------------------------------------------------------------------------


def render_json(
    results: Sequence[CheckResult],
    *,
    concurrency: int,
    backlog: int,
    rate: float | None,
    machine: dict[str, Any] | None = None,
) -> str:
    document = {
        "version": JSON_VERSION,
        "machine": machine if machine is not None else machine_info(),
        "concurrency": concurrency,
        "backlog": backlog,
        "rate": rate,
        "checks": [r.as_dict() for r in results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


_STYLES = {OK: "green", WARN: "yellow", FAIL: "bold red", INFO: "cyan", NA: "dim"}


def render_table(
    results: Sequence[CheckResult],
    *,
    concurrency: int,
    backlog: int,
    rate: float | None,
    color: bool,
    width: int = 100,
    machine: dict[str, Any] | None = None,
) -> str:
    """The terminal report: a table of statuses and values, then why and how to change each."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from .reporters._common import buffered_console

    console, buffer = buffered_console(color=color, width=width)
    info = machine if machine is not None else machine_info()
    plan = f"{concurrency:,} connections, listen backlog {backlog:,}"
    plan += f", {rate:,.0f} new connections/s" if rate is not None else ""
    console.print(Text(f"patchaudit doctor: {info['kernel']}", style="bold"))
    console.print(f"{info['cores']} cores, {info['python']}; planned: {plan}")
    console.print()
    # Fixed widths: setting names never wrap mid-word while the terminal has room for them.
    status_w = max(len("status"), *(len(r.status) for r in results))
    setting_w = max(len(r.id) for r in results)
    rest = width - 13 - status_w - setting_w  # 5 borders and 2 x 4 padding
    table = Table(box=box.SQUARE, header_style="bold")
    table.add_column("status", no_wrap=True)
    if rest >= 40:
        table.add_column("setting", width=setting_w, overflow="fold")
        table.add_column("value", width=rest * 3 // 5, overflow="fold")
        table.add_column("needed", width=rest - rest * 3 // 5, overflow="fold")
    else:
        for name in ("setting", "value", "needed"):
            table.add_column(name, ratio=1, overflow="fold")
    for r in results:
        table.add_row(
            Text(r.status, style=_STYLES.get(r.status, "")),
            Text(r.id, style="bold") + Text(f"\n{r.title}", style="dim"),
            r.value,
            r.needed or "",
        )
    console.print(table)
    console.print()
    for r in results:
        line = Text(f"{r.status:<4} ", style=_STYLES.get(r.status, ""))
        line.append(r.id, style="bold")
        console.print(line)
        console.print(Text(r.why), soft_wrap=False)
        for command in (r.fix or "").splitlines():
            console.print(Text("  $ " if not command.startswith("#") else "  ") + Text(command))
        console.print()
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(
        Text(f"{summary}. doctor changed nothing; the commands above need root.", style="bold")
    )
    # rich pads wrapped lines; trailing blanks would only get in the way of copy and diff
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))


# --- command line ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `patchaudit doctor`, for the lead's subparser."""
    parser.add_argument(
        "--concurrency",
        "-c",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"simultaneous connections planned (default {DEFAULT_CONCURRENCY}; the seed went "
        "up to 10000)",
    )
    parser.add_argument(
        "--backlog",
        type=_positive_int,
        default=DEFAULT_BACKLOG,
        help=f"listen backlog of the server under test (default {DEFAULT_BACKLOG}, gevent's)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        help="new connections per second planned (without keep-alive: requests per second)",
    )
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="client and server run in one process (two descriptors per connection in it)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--no-color", action="store_true", help="never use colour (NO_COLOR is honoured too)"
    )


def run_doctor(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    """Run every check, print the report, return 0 (no WARN/FAIL) or 1."""
    out = sys.stdout if stream is None else stream
    rate = getattr(args, "rate", None)
    results = run_checks(
        args.concurrency,
        args.backlog,
        rate=rate,
        same_process=getattr(args, "same_process", False),
    )
    if args.format == "json":
        text = render_json(results, concurrency=args.concurrency, backlog=args.backlog, rate=rate)
    else:
        tty = out.isatty()
        color = tty and not getattr(args, "no_color", False) and not os.environ.get("NO_COLOR")
        width = 100  # whenever the stream is not a terminal, so the output is reproducible
        if tty:
            try:
                width = os.get_terminal_size(out.fileno()).columns or width  # 0: size unset
            except (OSError, ValueError, io.UnsupportedOperation):
                pass
        text = render_table(
            results,
            concurrency=args.concurrency,
            backlog=args.backlog,
            rate=rate,
            color=color,
            width=width,
        )
    out.write(text)
    out.flush()
    return exit_code(results)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m patchaudit.doctor`` until the command is wired into ``patchaudit``."""
    parser = argparse.ArgumentParser(
        prog="patchaudit doctor",
        description="Check this machine's limits and TCP settings for a loopback load test.",
    )
    add_doctor_arguments(parser)
    return run_doctor(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
