"""``block`` events: gevent's monitor thread saw the hub blocked (called in that thread)."""

import sys

from ._events import emit, jsonable
from ._frames import stack
from ._state import MAIN_IDENT, S

# Steps in which only the probe's own code runs (the stale scan is seconds of CPU on a big app):
# the monitor would blame the probe, so reports landing there are dropped.
_PROBE_STEPS = frozenset(["startup", "patch", "owners", "stale", "libraries", "exit"])


def record_block(event) -> None:
    if S.step in _PROBE_STEPS or (S.step == "serve" and S.serve_path is None):
        return  # serve without a path: the probe importing pywsgi / starting the server
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
    emit(
        "block",
        blocking_time=jsonable(getattr(event, "blocking_time", None)),
        phase=S.step,
        path=S.serve_path,
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
