"""Frames as event data, and which frames belong to the app, the machinery or the probe."""

import linecache

from ._machinery import MACHINERY_PREFIXES, in_packages
from ._state import IMPORTLIB_DIR, PROBE_FILES, STDLIB_DIR, S


def source_line(filename, lineno):
    try:
        line = linecache.getline(filename, lineno).strip()
    except Exception:
        return None
    return line or None


def frame_dict(frame, lineno=None) -> dict:
    code = frame.f_code
    line = frame.f_lineno if lineno is None else lineno
    return {
        "file": code.co_filename,
        "line": line,
        "function": code.co_name,
        "code": source_line(code.co_filename, line),
    }


def stack(frame, limit=60) -> list:
    """Frames from ``frame`` outwards, returned outermost first (innermost last)."""
    return as_frames(capture(frame, limit))


def capture(frame, limit=60) -> list:
    """(frame, line) pairs, innermost first: no source read, so no I/O that lets the GIL go."""
    out = []
    while frame is not None and len(out) < limit:
        out.append((frame, frame.f_lineno))
        frame = frame.f_back
    return out


def as_frames(captured) -> list:
    """Event frames (outermost first) from :func:`capture`'s pairs."""
    return [frame_dict(frame, line) for frame, line in reversed(captured)]


def is_probe_or_importlib(filename) -> bool:
    return (
        filename in PROBE_FILES
        or filename.startswith("<frozen ")
        or filename.startswith(IMPORTLIB_DIR)
    )


def traceback_frames(tb) -> list:
    """Structured traceback, innermost last, without the probe's and importlib's frames.

    If only importlib frames are left (the error came from the import machinery itself, e.g.
    a module lock broken by patching mid-import), those are kept rather than returning nothing.
    """
    out = []
    machinery = []
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not is_probe_or_importlib(filename):
            out.append(frame_dict(tb.tb_frame, tb.tb_lineno))
        elif filename not in PROBE_FILES:
            machinery.append(frame_dict(tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return (out or machinery)[-60:]


def module_name_of(frame):
    g = frame.f_globals
    name = g.get("__name__")
    if isinstance(name, str):
        return name
    spec = g.get("__spec__")
    return getattr(spec, "name", None)


def is_machinery(frame) -> bool:
    if in_packages(module_name_of(frame) or "", MACHINERY_PREFIXES):
        return True
    return frame.f_code.co_filename in PROBE_FILES


def caller_frame(frame):
    """First frame outward that is not gevent/eventlet/zope/greenlet/the probe (or None)."""
    while frame is not None and is_machinery(frame):
        frame = frame.f_back
    return frame


def app_frame(frame):
    """Innermost frame under an app root; else the first one outside probe, gevent and stdlib."""
    fallback = None
    f = frame
    while f is not None:
        filename = f.f_code.co_filename
        for root in S.app_roots:
            if filename.startswith(root):
                return f
        if (
            fallback is None
            and not is_machinery(f)
            and not is_probe_or_importlib(filename)
            and not filename.startswith(STDLIB_DIR)
        ):
            fallback = f
        f = f.f_back
    return fallback


def where(frame):
    if frame is None:
        return None, None
    return frame.f_code.co_filename, frame.f_lineno


def qualified_type(exc) -> str:
    tp = type(exc)
    module = getattr(tp, "__module__", "builtins")
    if module == "builtins":
        return tp.__qualname__
    return module + "." + tp.__qualname__
