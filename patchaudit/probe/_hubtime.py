"""``hub_run`` events: how long the hub's thread ran one greenlet between two switches.

gevent's monitor thread counts switches and needs the GIL to look: C code that holds the GIL (a
backtracking regex, ``json.loads`` of a huge body) hides from it, and its report is written
long after it looked, once the probe may be in another step. Here the hub's own thread times
every run with ``greenlet.settrace`` (one ``perf_counter`` per switch), and while the current
run is already long two samplers record the hub thread's stack with the step and request path
of that moment: a SIGPROF handler every half threshold of CPU time (it runs in the hub's
thread the moment a C call holding the GIL returns, so it names the app line that made the
call) and a thread every half threshold of wall time (for waits that let the GIL go). A
greenlet that ended during the run has no frame left at its switch, but its samples were
taken while it ran. ``sys.setprofile`` was the other way to find that line; armed only after
a long run it still slowed a call-heavy loop about 5x and needed a second occurrence.
"""

import _signal
import sys
from time import perf_counter

from . import _state
from ._events import emit, jsonable
from ._frames import as_frames, capture, stack
from ._state import S

# Steps in which only the probe's own code runs: samples there would blame the probe.
PROBE_STEPS = frozenset(["startup", "patch", "owners", "stale", "libraries", "exit"])
_MAX_SAMPLES = 12  # distinct stacks kept per run (a CPU loop gives one or two)


class _Timer:
    """The timer's state, written by the hub's thread at each switch and read by the samplers.

    An instance with slots: the trace function runs at every switch, and instance slots are
    the cheapest thing to write (a class attribute write would also invalidate type caches).
    """

    __slots__ = (
        "hub",
        "ident",
        "threshold",
        "previous",
        "run_start",
        "current",
        "accounted",
        "samples",
        "in_tick",
    )

    def __init__(self):
        self.hub = None
        self.ident = None  # the hub's thread
        self.threshold = 0.1
        self.previous = None  # the trace function installed before ours (gevent's tracer)
        self.run_start = 0.0  # also the run's identity for the samplers
        self.current = None  # the greenlet running since run_start
        self.accounted = 0.0  # the run's time up to here went to a sample or a probe step
        self.samples = {}  # frames key -> (step, path, weight, captured), for the current run
        self.in_tick = False  # the SIGPROF handler is running


T = _Timer()


def app_step(step, path) -> bool:
    """Is app code what runs now (import, the factory, a request), not the probe?"""
    return step not in PROBE_STEPS and not (step == "serve" and path is None)


def install_hub_timer(monitor) -> None:
    """Start timing runs; called in the hub's thread as its monitor thread starts."""
    if T.hub is not None or S.fd is None or S.sink is not None or _state.in_forked_child():
        return  # once per process, and only for the audit job (not in the pytest plugin's)
    try:
        import greenlet
        from gevent import config
        from gevent.monkey import get_original

        hub = monitor.hub
        if hub is None:
            return
        T.hub = hub
        T.ident = hub.thread_ident
        T.threshold = float(config.max_blocking_time or 0.1)
        T.run_start = perf_counter()
        # A thread of our own, not a function in gevent's monitor thread: that one takes its
        # list of functions before it sleeps, and a C call can keep it asleep for seconds.
        get_original("_thread", "start_new_thread")(_sampler, (get_original("time", "sleep"),))
        T.previous = greenlet.settrace(_trace)  # last: nothing after it can fail
    except Exception:
        T.hub = None
        return
    try:
        _start_cpu_ticks()
    except Exception:
        pass  # the sampler thread still sees waits that let the GIL go


def run_age() -> float:
    """Seconds the hub's thread has been running the current greenlet (0 when idle or unknown)."""
    if T.hub is None or T.current is None or T.current is T.hub:
        return 0.0
    return perf_counter() - T.run_start


def _trace(event, args, _clock=perf_counter):
    # The hot path: one clock read and three slot writes per switch.
    if event == "switch" or event == "throw":
        now = _clock()
        timer = T
        if now - timer.run_start > timer.threshold and args[0] is not timer.hub:
            try:
                _report(args[0], now)
            except Exception:
                pass  # raising here would break the app's switch
        timer.run_start = now
        timer.current = args[1]
        if timer.samples:
            timer.samples = {}
    previous = T.previous
    if previous is not None:
        previous(event, args)


def _report(origin, now) -> None:
    samples = [
        {"phase": p, "path": q, "weight": round(w, 6), "stack": as_frames(c)}
        for p, q, w, c in T.samples.values()
    ]
    if _state.in_forked_child() or (not samples and not app_step(S.step, S.serve_path)):
        return
    frame = getattr(origin, "gr_frame", None)
    emit(
        "hub_run",
        duration=round(now - T.run_start, 6),
        started=round(T.run_start - _state.T0, 6),
        greenlet=jsonable(origin),
        finished=bool(getattr(origin, "dead", False)),
        samples=samples,
        stack=stack(frame) if frame is not None else None,
        tail=round(now - max(T.accounted, T.run_start), 6),
        phase=S.step,
        path=S.serve_path,
    )


def _sampler(sleep) -> None:
    period = T.threshold / 2
    while T.hub is not None:
        sleep(period)
        try:
            _sample(None, period)
        except Exception:
            pass


def _on_cpu_tick(signum, frame) -> None:
    """SIGPROF, every half threshold of CPU time: runs in the hub's thread as soon as a C call
    holding the GIL returns, before the greenlet can finish, so it names the calling line."""
    T.in_tick = True  # the sampler thread must not sample this handler's own frames
    try:
        _sample(frame, T.threshold / 2)
    except Exception:
        pass
    finally:
        T.in_tick = False


def _start_cpu_ticks() -> None:
    """Only in the main thread (where Python runs handlers), and only if SIGPROF is free.

    The interval timer survives ``execve``, where SIGPROF's default action ends the new
    program: a process that may exec itself (a server's re-exec) must disarm it first.
    """
    sig = _signal.SIGPROF
    if T.ident != _state.MAIN_IDENT or _signal.getsignal(sig) != _signal.SIG_DFL:
        return
    if _signal.getitimer(_signal.ITIMER_PROF) != (0.0, 0.0):
        return  # a profiler of the app's own
    _signal.signal(sig, _on_cpu_tick)
    _signal.siginterrupt(sig, False)  # SA_RESTART: no EINTR for the app's own calls
    period = T.threshold / 2
    _signal.setitimer(_signal.ITIMER_PROF, period, period)


def _sample(frame, period) -> None:
    """Add the hub thread's stack to the current run (``frame``: in that thread, else read).

    Nothing between the checks and the insertion lets the GIL go (the source lines are read
    when the run is reported), so a run that ends right after a C call keeps its sample.
    """
    start, samples = T.run_start, T.samples  # the run, and its dict
    if T.current is None or T.current is T.hub or perf_counter() - start < period:
        return
    step, path = S.step, S.serve_path
    if frame is None:
        if T.in_tick:
            return  # the tick handler is sampling, and would be what we see
        frame = sys._current_frames().get(T.ident)
    now = perf_counter()
    if frame is None or T.run_start != start:
        return
    if not app_step(step, path):
        T.accounted = now  # the probe's own time is nobody's sample
        return
    captured = capture(frame)
    if T.run_start != start or (S.step, S.serve_path) != (step, path):
        return  # the run or the step changed while the stack was read
    accounted = max(T.accounted, start)
    T.accounted = now
    key = (step, path, tuple((id(f.f_code), line) for f, line in captured))
    sample = samples.get(key)
    if sample is not None:
        samples[key] = (step, path, sample[2] + now - accounted, captured)
    elif len(samples) < _MAX_SAMPLES:
        samples[key] = (step, path, now - accounted, captured)
