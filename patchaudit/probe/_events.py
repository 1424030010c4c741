"""Event emission: one JSON line per event, or one dict to the in-process sink."""

import json
from time import perf_counter

from . import _state
from ._state import S


def jsonable(value, depth=0):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v, depth + 1) for v in items]
    if depth < 3 and isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ in app code must not break the probe
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= 300 else text[:297] + "..."


def emit(event: str, **fields) -> None:
    """Append one event line, written with a single os.write so a crash keeps what came before.

    In-process (the pytest plugin) the event dict goes to the sink instead; a forked child's
    events are dropped there, since its memory is not the auditing process's.
    """
    sink = S.sink
    fd = S.fd
    if sink is None and fd is None:
        return
    record = {"event": event, "t": round(perf_counter() - _state.T0, 6)}
    record.update(fields)
    child = _state.in_forked_child()
    if sink is not None:
        if not child:
            try:
                sink(record)
            except Exception:
                pass
        return
    if child:
        record["pid"] = _state.real_getpid()
        record["forked_child"] = True
    try:
        try:
            # json.dumps without arguments reuses one cached encoder: this is the hot path (one
            # call per import), several times cheaper than building an encoder per call.
            text = json.dumps(record)
        except (TypeError, ValueError):
            text = json.dumps(record, default=jsonable)
        data = (text + "\n").encode("utf-8", "replace")
    except Exception as exc:  # never let an odd value lose the event entirely
        fallback = {"event": event, "t": record["t"], "unencodable": repr(exc)}
        data = (json.dumps(fallback) + "\n").encode("utf-8", "replace")
    # A forked child is single-threaded, and the lock may have been copied in the locked state.
    # The timeout covers the SIGTERM handler interrupting an emit in the same thread.
    locked = False if child else S.lock.acquire(True, 1.0)
    try:
        while data:
            written = _state.real_write(fd, data)
            data = data[written:]
    except OSError:
        S.fd = None  # closed underneath us (daemonizers close fds): stop writing
    finally:
        if locked:
            S.lock.release()
