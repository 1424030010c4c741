"""Per-test hub blocking: gevent's greenlet-switch tracer plus a native sampling thread.

gevent's own monitor thread (``GEVENT_MONITOR_THREAD_ENABLE``) is not used as is: it only starts
with the hub, installs a memory monitor that warns without psutil (an error under ``-W error``,
inside the user's test), prints to stderr unless told otherwise, and reports the *threshold*
rather than the time blocked. This module reuses the piece that matters, gevent's compiled
``GreenletTracer`` (it counts greenlet switches and remembers the greenlet switched to), and
samples it from a native thread every fifth of the threshold:

* the switch counter moved since the last sample: something yielded, nothing is blocked;
* it did not move, and the running greenlet is not the hub: that greenlet has held the hub since
  at least the last sample that saw a switch. Past the threshold, the main thread's stack is
  taken (where it is stuck *now*), and the episode lasts until the counter moves again.

The duration is a lower bound, accurate to one sampling interval. A test that takes long while
yielding moves the counter at every yield and is never reported.

Only imported once the tests have imported gevent; it imports nothing of gevent's before that.
"""

from __future__ import annotations

import sys
from time import perf_counter
from typing import Any

# One sample per this fraction of the threshold, within these bounds (seconds).
_SAMPLES_PER_THRESHOLD = 5
_MIN_INTERVAL = 0.002
_MAX_INTERVAL = 0.05
_MAX_FRAMES = 80


def _natives() -> tuple[Any, Any, Any, Any]:
    """The real ``start_new_thread``, ``allocate_lock``, ``get_ident`` and ``sleep``."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        get = monkey.get_original
        return (
            get("_thread", "start_new_thread"),
            get("_thread", "allocate_lock"),
            get("_thread", "get_ident"),
            get("time", "sleep"),
        )
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and getattr(patcher, "already_patched", None):
        thread, time = patcher.original("_thread"), patcher.original("time")
        return thread.start_new_thread, thread.allocate_lock, thread.get_ident, time.sleep
    import _thread
    import time

    return _thread.start_new_thread, _thread.allocate_lock, _thread.get_ident, time.sleep


class BlockMonitor:
    """Arm it around each test; it collects blocking episodes of the main thread's hub.

    Create, arm, disarm and stop it on the main thread (the tracer is per thread). Episodes are
    dicts: ``test``, ``phase``, ``seconds`` (lower bound), ``greenlet`` (repr), ``frames``
    (``(file, line, function)`` outermost first, taken when the threshold was crossed).
    """

    def __init__(self, threshold: float) -> None:
        from gevent._tracer import GreenletTracer
        from gevent.hub import Hub

        start_new_thread, allocate_lock, get_ident, sleep = _natives()
        self._hub_type = Hub
        self._sleep = sleep
        self._lock = allocate_lock()
        self._main_ident = get_ident()  # the native id (patched threading reports greenlets)
        self._tracer = GreenletTracer()  # chains any trace function already installed
        self.threshold = threshold
        self._limit = threshold
        self._interval = _interval(threshold)
        self._running = True
        self._armed = False
        self._test: str | None = None
        self.phase = "setup"
        self._last_count: int | None = None
        self._last_switch = 0.0
        self._episode: dict[str, Any] | None = None
        self._done: list[dict[str, Any]] = []
        start_new_thread(self._run, ())

    # -- main thread ---------------------------------------------------------------------------
    def arm(self, test: str, limit: float) -> None:
        """Start watching for ``test``; blocks longer than ``limit`` seconds are episodes."""
        with self._lock:
            self._test = test
            self._limit = limit
            self._interval = _interval(min(limit, self.threshold))
            self.phase = "setup"
            self._last_count = None
            self._episode = None
            self._done = []
            self._armed = True
        # The test's own greenlet counts as running from now on, even before its first switch.
        self._tracer.monitor_current_greenlet_blocking()

    def disarm(self) -> list[dict[str, Any]]:
        """Stop watching; the episodes seen since :meth:`arm`."""
        with self._lock:
            self._armed = False
            self._close()
            done, self._done = self._done, []
        self._tracer.ignore_current_greenlet_blocking()
        return done

    def stop(self) -> None:
        self._running = False
        self._armed = False
        try:
            self._tracer.kill()
        except Exception:
            pass

    # -- the sampling thread -------------------------------------------------------------------
    def _run(self) -> None:
        while self._running:
            self._sleep(self._interval)
            try:
                with self._lock:
                    if self._armed:
                        self._sample()
            except Exception:  # never let the sampler die loudly in someone's test run
                self._episode = None

    def _sample(self) -> None:
        now = perf_counter()
        count = self._tracer.greenlet_switch_counter
        if count != self._last_count:
            self._last_count = count
            self._last_switch = now
            self._close()
            return
        active = self._tracer.active_greenlet
        if active is None or isinstance(active, self._hub_type):
            self._last_switch = now  # the hub itself runs (idle in its loop): not blocked
            self._close()
            return
        blocked = now - self._last_switch
        if self._episode is None:
            if blocked < self._limit:
                return
            self._episode = {
                "test": self._test,
                "phase": self.phase,
                "greenlet": _safe_repr(active),
                "frames": _frames_of(self._main_ident),
                "start": self._last_switch,
            }
        self._episode["seconds"] = round(blocked, 4)

    def _close(self) -> None:
        if self._episode is not None:
            episode, self._episode = self._episode, None
            episode.pop("start", None)
            self._done.append(episode)


def _interval(threshold: float) -> float:
    return min(_MAX_INTERVAL, max(_MIN_INTERVAL, threshold / _SAMPLES_PER_THRESHOLD))


def _frames_of(ident: int) -> list[tuple[str, int, str]]:
    """The thread's current stack, outermost first, without reading any source (cheap)."""
    frame = sys._current_frames().get(ident)
    out = []
    while frame is not None and len(out) < _MAX_FRAMES:
        code = frame.f_code
        out.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    out.reverse()
    return out


def _safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:200]
