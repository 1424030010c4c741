"""Statistics shared by the client processes: live counters in shared memory, HDR histograms.

Each client process owns one slot of int64 counters in a ``multiprocessing.shared_memory`` block
and is its only writer, so no lock is needed; the parent sums the slots for the live progress
bar. Latencies go into a per-process HdrHistogram (bounded relative error: 3 significant
digits), which each process encodes when it finishes and the parent merges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from multiprocessing import shared_memory

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
SLOT_WORDS = ERRORS_AT + len(ERROR_KINDS) + 1  # + spare
GO, STOP = 0, 1  # words of the control block
STATE_READY, STATE_RUNNING, STATE_DONE = 1, 2, 3

# Latencies are recorded in microseconds, from 1 µs to one hour.
HIST_LOWEST, HIST_HIGHEST, HIST_DIGITS = 1, 3_600_000_000, 3


def new_histogram():
    """An empty HdrHistogram (imported here: the harness must load without its extra)."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(HIST_LOWEST, HIST_HIGHEST, HIST_DIGITS)


class SharedCounters:
    """The shared block: a control slot plus one counter slot per client process."""

    def __init__(self, processes: int, name: str | None = None) -> None:
        size = (processes + 1) * SLOT_WORDS * 8
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=size)
            self.owner = True
        else:
            self.shm = _attach(name)
            self.owner = False
        self.processes = processes
        self.words = self.shm.buf.cast("q")
        if self.owner:
            for i in range(len(self.words)):
                self.words[i] = 0

    @property
    def name(self) -> str:
        return self.shm.name

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
        self.shm.close()
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


def _attach(name: str) -> shared_memory.SharedMemory:
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        pass
    # Before 3.13 attaching registers the block with a resource tracker (a process started
    # for the purpose), which unlinks it when this client process exits, under the parent's
    # feet. The parent owns the block: skip the registration.
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


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
    client_peak_rss_kb: int | None = None  # all client processes together; not in the JSON
    port: int | None = None  # where the server listened; not in the JSON

    def to_json(self) -> dict:
        data = asdict(self)
        del data["client_peak_rss_kb"], data["port"]
        data["rps"] = round(self.rps, 1)
        data["duration_s"] = round(self.duration_s, 3)
        return data

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
