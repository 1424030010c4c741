"""``block`` events: gevent's monitor thread saw the hub blocked (called in that thread)."""

import sys

from ._events import emit, jsonable
from ._frames import stack
from ._hubtime import T, app_step, run_age
from ._state import MAIN_IDENT, S


def record_block(event) -> None:
    # Only while app code runs: the stale scan is seconds of the probe's own CPU on a big app,
    # and serve without a path is the probe importing pywsgi and starting the server.
    step, path = S.step, S.serve_path
    if not app_step(step, path):
        return
    if T.hub is not None and run_age() < T.threshold:
        # The monitor writes its report long after it looked (it walks every object for its
        # greenlet tree): the run it saw is over, and the step and stack of now are not that
        # run's. The hub timer's ``hub_run`` event for that run says where it went.
        return
    frames = None
    source = "frames"
    hub = getattr(event, "hub", None)
    ident = getattr(hub, "thread_ident", None) or MAIN_IDENT
    try:
        frame = sys._current_frames().get(ident)
        if frame is not None:
            frames = stack(frame)
    except Exception:
        frames = None
    if not frames:
        source = "report"
        frames = _stack_from_report(getattr(event, "info", None) or [])
    if (S.step, S.serve_path) != (step, path):
        return  # the app moved on while the stack was read: it is not that step's stack
    emit(
        "block",
        blocking_time=jsonable(getattr(event, "blocking_time", None)),
        phase=step,
        path=path,
        greenlet=jsonable(getattr(event, "greenlet", None)),
        stack=frames,
        stack_source=source,
    )


def _stack_from_report(report):
    """Parse the 'Blocked Stack' part of gevent's text report (traceback.format_stack text)."""
    import re  # already imported at interpreter start-up

    text = "\n".join(str(part) for part in report)
    start = text.find("Blocked Stack")
    end = text.find("\nInfo:", start)
    if start < 0:
        return []
    body = text[start : end if end > 0 else len(text)]
    frames = []
    for m in re.finditer(r'File "([^"]+)", line (\d+), in (\S+)\n(?:\s+(\S.*))?', body):
        frames.append(
            {
                "file": m.group(1),
                "line": int(m.group(2)),
                "function": m.group(3),
                "code": (m.group(4) or "").strip() or None,
            }
        )
    return frames
