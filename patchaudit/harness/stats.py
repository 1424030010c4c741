"""Statistics shared by the client processes: live counters in shared memory, HDR histograms.

Each client process owns one slot of int64 counters in a shared block of memory and is its only
writer, so no lock is needed; the parent sums the slots for the live progress bar. Latencies go
into a per-process HdrHistogram (bounded relative error: 3 significant digits), which each
process encodes when it finishes and the parent merges.

The block is an anonymous file (``memfd_create``; an unlinked temporary file where that does not
exist) that the client processes inherit as a file descriptor and map. It has no name, so nothing
can be left behind in ``/dev/shm`` however the parent dies (``multiprocessing.shared_memory``
blocks are named, and leak on ``kill -9`` unless a resource-tracker process outlives us to
unlink them), and no resource tracker is needed.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

# How a request can fail, in the order of the counters (and of the JSON "errors" object).
ERROR_KINDS = (
    "connect_refused",  # nothing listening, or the backlog overflowed and the kernel said RST
    "connect_timeout",  # SYN not answered in time (backlog full, SYN cookies off)
    "reset",  # the connection was reset or closed before a complete response header arrived
    "read_timeout",  # no (complete) response within --timeout
    "bad_status",  # a status other than 2xx/3xx, or not HTTP at all
    "short_body",  # the body ended before Content-Length (or the final chunk)
    "other",  # anything else, e.g. EADDRNOTAVAIL when the ephemeral ports run out
)

# Layout of one slot (int64 each). Slot 0 is the control block written by the parent.
STATE, DONE, OK, FAILED, BYTES, START_NS, END_NS, PEAK_RSS_KB = range(8)
ERRORS_AT = 8
# After the errors: the process's CPU (user + system) and wall time while it drove load, in µs,
# and (open model) the requests it sent more than one interval after their intended time.
CPU_US, WALL_US, LATE = range(ERRORS_AT + len(ERROR_KINDS), ERRORS_AT + len(ERROR_KINDS) + 3)
SLOT_WORDS = LATE + 2  # + spare
GO, STOP = 0, 1  # words of the control block
STATE_READY, STATE_RUNNING, STATE_DONE = 1, 2, 3

# Latencies are recorded in microseconds, from 1 µs to one hour.
HIST_LOWEST, HIST_HIGHEST, HIST_DIGITS = 1, 3_600_000_000, 3

# A load process above this share of the cores it can use was the bottleneck, not the server.
CLIENT_BOUND = 0.9
# An open-model run is saturated when it completed less than this share of its target rate, or
# when more than LATE_SHARE of its requests were sent late: more than one interval, and more
# than LATE_FLOOR_NS, after their intended time. The floor: gevent's timers wait in whole
# milliseconds (epoll), and a shared machine's scheduler delays a process by a few more, so a
# lag below it says nothing about whether the client or the server keeps up.
SATURATED_BELOW, LATE_SHARE = 0.95, 0.01
LATE_FLOOR_NS = 10_000_000


def new_histogram():
    """An empty HdrHistogram (imported here: the harness must load without its extra)."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(HIST_LOWEST, HIST_HIGHEST, HIST_DIGITS)


class SharedCounters:
    """The shared block: a control slot plus one counter slot per client process.

    ``SharedCounters(n)`` creates it; a client process attaches with
    ``SharedCounters(n, fd=inherited_fd)``. Pass :attr:`fd` to the children with ``pass_fds``.
    """

    def __init__(self, processes: int, fd: int | None = None) -> None:
        size = (processes + 1) * SLOT_WORDS * 8
        self.owner = fd is None
        self.fd = _anonymous_memory(size) if fd is None else fd
        self.processes = processes
        self._map = mmap.mmap(self.fd, size)  # a new file is all zeros
        self.words = memoryview(self._map).cast("q")

    def base(self, index: int) -> int:
        """First word of client process ``index`` (0-based)."""
        return (index + 1) * SLOT_WORDS

    def control(self, word: int) -> int:
        return self.words[word]

    def set_control(self, word: int, value: int) -> None:
        self.words[word] = value

    def slot(self, index: int, word: int) -> int:
        return self.words[self.base(index) + word]

    def total(self, word: int) -> int:
        return sum(self.words[self.base(i) + word] for i in range(self.processes))

    def errors(self) -> dict[str, int]:
        return {kind: self.total(ERRORS_AT + i) for i, kind in enumerate(ERROR_KINDS)}

    def close(self) -> None:
        self.words.release()
        self._map.close()
        os.close(self.fd)


def _anonymous_memory(size: int) -> int:
    """A descriptor of a new, nameless, ``size``-byte file that lives only while it is open."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("patchaudit-bench-counters", os.MFD_CLOEXEC)
    else:  # unlinked at once (O_TMPFILE on Linux: never named at all)
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, size)
    return fd


@dataclass
class LiveStats:
    """What the progress bar shows, read from the shared counters while the run goes on."""

    requests: int
    done: int
    completed: int
    failed: int
    elapsed_s: float

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class ClientCpu:
    """What the load generator's processes cost: user + system CPU seconds of each over the
    wall time it ran, against the cores each could use (1 for a single-threaded process).

    Every engine builds it the same way (:func:`client_cpu`), so every table flags a client that
    was the bottleneck the same way."""

    seconds: list[float]
    wall_s: float
    cores: list[int]
    #: The cores all of them could use together (fewer than ``sum(cores)`` when they are
    #: more processes than CPUs, or pinned to fewer).
    limit: int

    @property
    def usage(self) -> list[float]:
        """Cores busy, per process (1.0 = one core all the time)."""
        return [s / self.wall_s if self.wall_s > 0 else 0.0 for s in self.seconds]

    @property
    def total(self) -> float:
        return sum(self.usage)

    @property
    def bound(self) -> bool:
        """A process, or all of them together, used more than CLIENT_BOUND of the cores they
        could use: the client, not the server, set the pace."""
        usage = self.usage
        return any(u > CLIENT_BOUND * k for u, k in zip(usage, self.cores, strict=True)) or (
            sum(usage) > CLIENT_BOUND * self.limit
        )

    def to_json(self) -> dict:
        return {
            "processes": [round(u, 3) for u in self.usage],
            "cores": self.limit,
            "total": round(self.total, 3),
            "wall_s": round(self.wall_s, 3),
        }


def client_cpu(
    seconds: list[float],
    wall_s: float,
    cores: list[int] | None = None,
    cpus: set[int] | None = None,
) -> ClientCpu:
    """The CPU use of a load generator: ``seconds`` of user + system CPU per process over
    ``wall_s``; ``cores`` each process could use (default one each, a single thread), capped at
    the CPUs it runs on (``cpus`` when pinned, else those this process may use)."""
    available = len(cpus) if cpus else len(os.sched_getaffinity(0))
    cores = [min(k, available) for k in (cores or [1] * len(seconds))]
    return ClientCpu(list(seconds), wall_s, cores, min(sum(cores), available))


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far, from /proc (None once it is gone).

    For a process we did not start ourselves in Python (ab, wrk, locust under the supervisor):
    read it while it runs; a zombie still shows its final figures until it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def format_rate(rate: float) -> str:
    """Requests per second as the tables and messages show them: 20,000 (not 2e+04), 0.5."""
    return f"{rate:,.0f}" if rate >= 100 or rate == int(rate) else f"{rate:.3g}"


def is_saturated(target_rate: float, achieved_rate: float, late_sends: int, sent: int) -> bool:
    """An open-model point the server (or the client) could not keep up with."""
    return achieved_rate < SATURATED_BELOW * target_rate or late_sends > LATE_SHARE * max(sent, 1)


@dataclass
class RunResult:
    """One run: one server at one concurrency, measured by one engine. ``to_json`` is the
    schema of ``--format json``; ``error`` is None unless the run could not complete."""

    server: str
    mode: str
    engine: str
    concurrency: int
    requests: int
    keep_alive: bool
    completed: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    rps: float = 0.0
    latency_ms: dict[str, float | None] = field(
        default_factory=lambda: dict.fromkeys(("p50", "p90", "p99", "max"))
    )
    duration_s: float = 0.0
    error: str | None = None
    #: "closed" (each connection waits for its answer) or "open" (sends on a fixed schedule).
    model: str = "closed"
    #: Open model only: the requests per second asked for and completed, and whether the
    #: run fell short (see :func:`is_saturated`); latency_ms is then from the intended send
    #: time and service_ms from the actual one.
    target_rate: float | None = None
    achieved_rate: float | None = None
    saturated: bool | None = None
    late_sends: int | None = None
    service_ms: dict[str, float | None] | None = None
    client_cpu: ClientCpu | None = None
    client_peak_rss_kb: int | None = None  # all client processes together; not in the JSON
    port: int | None = None  # where the server listened; not in the JSON

    def to_json(self) -> dict:
        data = asdict(self)
        del data["client_peak_rss_kb"], data["port"]
        data["rps"] = round(self.rps, 1)
        data["duration_s"] = round(self.duration_s, 3)
        if self.achieved_rate is not None:
            data["achieved_rate"] = round(self.achieved_rate, 1)
        data["client_cpu"] = None if self.client_cpu is None else self.client_cpu.to_json()
        data["client_bound"] = None if self.client_cpu is None else self.client_cpu.bound
        return data

    def finish_open(self, target_rate: float, late_sends: int) -> None:
        """Fill the open-model fields from what was measured (``rps`` is the achieved rate)."""
        self.model = "open"
        self.target_rate = target_rate
        self.achieved_rate = self.rps
        self.late_sends = late_sends
        sent = self.completed + self.failed
        self.saturated = is_saturated(target_rate, self.rps, late_sends, sent)

    @property
    def failed_entirely(self) -> bool:
        return self.error is not None and self.completed == 0


def latency_summary(histogram) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds (None when nothing succeeded)."""
    if histogram.get_total_count() == 0:
        return dict.fromkeys(("p50", "p90", "p99", "max"))
    summary: dict[str, float | None] = {
        f"p{p}": round(histogram.get_value_at_percentile(p) / 1000, 3) for p in (50, 90, 99)
    }
    summary["max"] = round(histogram.get_max_value() / 1000, 3)
    return summary
