"""The checks: each Linux tweak of "gevent: the Good, the Bad, the Ugly", judged for a run."""

from __future__ import annotations

import math
import sys

from .._system import FD_MARGIN, descriptors_needed, nofile_limits, reserved_ports, sysctl_path
from ._model import (
    CONNTRACK_TIME_WAIT_DEFAULT,
    FAIL,
    INFO,
    NA,
    OK,
    TIME_WAIT_SECONDS,
    WARN,
    _check,
    _Context,
    _kernel_release,
    _kernel_version,
    _n,
    _optional_int,
    _Outcome,
    _read,
    _read_int,
    _read_ints,
    _syn_retry_times,
    _sysctl_fix,
    _Unavailable,
)

# --- the checks ------------------------------------------------------------------------------


@_check(
    "RLIMIT_NOFILE",
    "Open file descriptors",
    """Each process can hold only as many descriptors as its soft limit, and with ab and the
    server on one host each holds one end of every connection (2 per connection host-wide);
    the post needed `ulimit -n 16384` and a `* hard nofile 16384` line in
    /etc/security/limits.conf to go past ~4000 connections.""",
    needs_proc=False,
)
def _nofile(ctx: _Context) -> _Outcome:
    try:
        import resource
    except ImportError:
        raise _Unavailable(f"no resource limits on {sys.platform}") from None
    soft, hard = nofile_limits()
    infinity = resource.RLIM_INFINITY
    ctx.readings["RLIMIT_NOFILE.soft"] = "unlimited" if soft == infinity else str(soft)
    ctx.readings["RLIMIT_NOFILE.hard"] = "unlimited" if hard == infinity else str(hard)
    ends = 2 if ctx.same_process else 1
    need = descriptors_needed(ctx.concurrency, same_process=ctx.same_process)
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
    connections per second without reuse: the post's wall 'past ~500 connections per second',
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
    reserved = reserved_ports(reserved_text, low, high) if reserved_text else 0
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
    4.18, does it for loopback only, exactly the post's 127.0.0.1 <-> 127.0.0.1 case; the post
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
    "TIME_WAIT recycling (the post's advice)",
    """The post's 'echo 1 > tcp_tw_recycle' dropped SYNs from clients behind NAT, and from
    everyone once Linux 4.10 randomised timestamps per connection. Linux 4.12 removed it, so
    the post's command fails today and tcp_tw_reuse is the knob left.""",
)
def _tw_recycle(ctx: _Context) -> _Outcome:
    release = _kernel_release(ctx)
    version = _kernel_version(release)
    try:
        recycle = _read_int(ctx, "net.ipv4.tcp_tw_recycle")
    except _Unavailable as missing:
        if not (sysctl_path("net.ipv4.tcp_tw_recycle", ctx.proc_root)).exists() and (
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
    dropping SYNs, and logs the post's 'possible SYN flooding on port 10001. Sending
    cookies.'. The post says to disable them (its command, echo 1, enables them); 0 turns
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
    tcp_syn_linear_timeouts): latency spikes and the post's 'connection timeouts'. ab -c N
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
    post: 'You'll quickly fill up the netfilter connection table'; raise nf_conntrack_max or
    turn the firewall off while testing.""",
)
def _conntrack(ctx: _Context) -> _Outcome:
    max_path = sysctl_path("net.netfilter.nf_conntrack_max", ctx.proc_root)
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
