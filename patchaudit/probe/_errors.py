"""``error`` events: what was raised, where, and through which chain of imports."""

import sys

from . import _state
from ._events import emit, jsonable
from ._frames import is_probe_or_importlib, module_name_of, qualified_type, traceback_frames
from ._state import S


def _import_chain(failing):
    """Module names from the first one the target import triggered down to ``failing``."""
    chain = []
    name = failing
    while isinstance(name, str) and not name.startswith("<") and name not in chain:
        chain.append(name)
        name = S.importers.get(name)
    chain.reverse()
    return chain


def _failing_module(exc):
    """The module whose import failed: innermost module-level frame, plus a missing module."""
    failing = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "<module>" and not is_probe_or_importlib(
            frame.f_code.co_filename
        ):
            failing = module_name_of(frame)
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        broken = S.import_files.get(getattr(exc, "filename", None) or "")
        if broken:
            return broken
    if isinstance(exc, ImportError):
        missing = getattr(exc, "name", None)
        if missing and missing not in sys.modules and missing in S.importers:
            return missing
    return failing


def emit_error(exc: BaseException, phase: str) -> None:
    if _state.in_forked_child():
        if S.sink is not None:
            return  # in-process: a fork of the test process is not ours to end
        _state.real_exit(0)
    if isinstance(exc, SystemExit):
        kind = "system-exit"
    elif isinstance(exc, SyntaxError):
        kind = "syntax-error"
    elif isinstance(exc, ImportError):
        kind = "import-error"
    else:
        kind = "exception"
    fields = {
        "kind": kind,
        "type": qualified_type(exc),
        "message": str(exc),
        "traceback": traceback_frames(exc.__traceback__),
        "import_chain": [],
        "phase": phase,
    }
    try:
        failing = _failing_module(exc)
        if failing:
            fields["import_chain"] = _import_chain(failing)
    except Exception:
        pass
    if kind == "system-exit":
        fields["code"] = jsonable(exc.code)
    elif kind == "syntax-error":
        fields["file"] = getattr(exc, "filename", None)
        fields["line"] = getattr(exc, "lineno", None)
    elif kind == "import-error":
        fields["name"] = getattr(exc, "name", None)
    S.errors += 1
    emit("error", **fields)
