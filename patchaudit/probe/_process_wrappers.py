"""Forks, detaching, ``os._exit``, ``DaemonContext.open`` and SIGTERM, as the app meets them.

A forked child of the application never writes results and never leaves the process group:
``setsid``/``setpgrp``/``setpgid`` are refused in a fork (and recorded as ``contained``).
"""

import _signal
import os
import sys
import time

from . import _serving, _state
from ._events import emit, jsonable
from ._fork_checks import fork_facts, hub_fds, wrap_register_at_fork
from ._frames import app_frame, is_probe_or_importlib, module_name_of, stack, where
from ._hangs import dump, main_greenlet_stack
from ._state import PROBE_FILES, S, in_forked_child

_FORKED = []  # the probe process forked: its children are worth waiting for at os._exit
_CHILD_GRACE = 1.0
_real_sleep = time.sleep  # imported before the app runs: the native one

# Modules whose forks are fork+exec of a subprocess, not the app forking itself: stdlib
# subprocess forks in C (invisible here), gevent's subprocess does the same in Python.
_SUBPROCESS_FORKERS = frozenset(["gevent.subprocess"])


def _fork_via(frame):
    """Module that asked for the fork: the first frame outside the probe and gevent.os."""
    while frame is not None:
        name = module_name_of(frame)
        if frame.f_code.co_filename not in PROBE_FILES and name != "gevent.os":
            return name
        frame = frame.f_back
    return None


def record_fork(what, frame, contained=False, **facts) -> bool:
    """Emit the ``fork`` event (``facts``: the extra fields of its kind); False when the call
    is a subprocess's fork+exec, which is not reported."""
    via = _fork_via(frame)
    if via in _SUBPROCESS_FORKERS:
        return False
    file, line = where(app_frame(frame))
    emit(
        "fork",
        what=what,
        file=file,
        line=line,
        via=via,
        after_patch=S.patched,
        phase=S.step,
        contained=contained,
        **facts,
    )
    return True


def _contained_detach(what, real):
    """Wrap a call that leaves the process group: recorded always, refused in forked children."""

    def detach(*args):
        child = in_forked_child()
        record_fork(what, sys._getframe(1), contained=child)
        if child:
            return None
        return real(*args)

    return detach


def install_process_wrappers() -> None:
    """Wrap os functions before the app runs (gevent.os later captures these as the raw ones)."""
    real_fork = getattr(os, "fork", None)
    real_forkpty = getattr(os, "forkpty", None)
    real_closerange = getattr(os, "closerange", None)

    if real_fork is not None:

        def fork():
            caller = sys._getframe(1)
            if record_fork("os.fork", caller, **fork_facts(caller)) and not in_forked_child():
                _FORKED.append(True)
            return real_fork()

        os.fork = fork

    if real_forkpty is not None:

        def forkpty():
            caller = sys._getframe(1)
            record_fork("os.forkpty", caller, **fork_facts(caller))
            return real_forkpty()

        os.forkpty = forkpty

    # A forked child that detaches would escape the launcher's killpg: keep it in the group.
    for name in ("setsid", "setpgrp", "setpgid"):
        real = getattr(os, name, None)
        if real is not None:
            setattr(os, name, _contained_detach("os." + name, real))

    if real_closerange is not None:

        def closerange(fd_low, fd_high):
            # the running event loop's own descriptors that this call closes
            closed = [fd for fd in hub_fds() if fd_low <= fd < fd_high]
            record_fork("os.closerange", sys._getframe(1), hub_fds=closed)
            keep = S.fd
            # Keep the events file open so later facts (and a child's setsid) are still seen.
            if keep is not None and fd_low <= keep < fd_high:
                real_closerange(fd_low, keep)
                return real_closerange(keep + 1, fd_high)
            return real_closerange(fd_low, fd_high)

        os.closerange = closerange

    real_register = getattr(os, "register_at_fork", None)
    if real_register is not None:
        os.register_at_fork = wrap_register_at_fork(real_register)

    def _exit(code):
        if not in_forked_child():
            try:
                file, line = where(app_frame(sys._getframe(1)))
                emit("exit", code=jsonable(code), file=file, line=line, phase=S.step)
                emit("done", status="error", errors=S.errors, reason="os._exit")
            except Exception:
                pass
            if _FORKED:
                # A daemonizer's first process exits right after forking: what breaks happens
                # in the children, which get a moment to record it before the group is killed.
                S.step = "exit"  # the monitor must not blame the app for this wait
                _real_sleep(_CHILD_GRACE)
        _state.real_exit(code)

    os._exit = _exit


def _hook_daemon(module):
    cls = getattr(module, "DaemonContext", None)
    open_ = getattr(cls, "open", None) if cls is not None else None
    if open_ is None or getattr(open_, "_patchaudit_wrapper", False):
        return

    def open_wrapper(self, *args, **kwargs):
        record_fork("daemon.DaemonContext.open", sys._getframe(1))
        return open_(self, *args, **kwargs)

    open_wrapper._patchaudit_wrapper = True
    open_wrapper.__wrapped__ = open_
    cls.open = open_wrapper


POST_IMPORT_HOOKS = {"daemon.daemon": _hook_daemon, "daemon": _hook_daemon}


_STDLIB = os.path.dirname(os.__file__) + os.sep


def _in_stdlib(filename: str) -> bool:
    return filename.startswith(_STDLIB) and "site-packages" not in filename


def _stuck_stack(frame):
    """The stack where the signal landed, innermost last. A signal that lands while the app is
    inside one of the probe's own hooks (an import being recorded) reports the app line that
    called it: that is where the app was, not the probe."""
    frames = stack(frame)
    files = [f.get("file") or "" for f in frames]
    is_app = [not is_probe_or_importlib(name) for name in files]
    if not any(is_app):
        return frames
    # What a probe hook called (linecache, while recording an import) is the probe's doing too:
    # cut at the first probe frame inside the app, then back to the app's own last line.
    own = [i for i, name in enumerate(files) if is_app[i] and not _in_stdlib(name)]
    first_app = own[0] if own else is_app.index(True)
    inner = [i for i in range(first_app, len(files)) if files[i] in PROBE_FILES]
    if inner:
        del frames[inner[0] :]
        del is_app[inner[0] :]
    last_app = len(is_app) - 1 - is_app[::-1].index(True)
    del frames[last_app + 1 :]
    return frames


def on_sigterm(signum, frame):
    if in_forked_child():
        _state.real_exit(128 + signum)
    try:
        try:
            greenlet_stack = main_greenlet_stack()
        except Exception:
            greenlet_stack = None
        parked, threads = dump(_serving.REQUEST_CODES)
        emit(
            "terminated",
            signal=signum,
            phase=S.step,
            serve_path=S.serve_path,
            stack=_stuck_stack(frame),
            main_greenlet_stack=greenlet_stack,
            greenlets=parked,
            threads=threads,
        )
        emit("done", status="error", errors=S.errors, reason="SIGTERM")
    finally:
        # Die by the signal itself so the launcher sees "killed by SIGTERM", not an exit code.
        _signal.signal(signum, _signal.SIG_DFL)
        os.kill(_state.real_getpid(), signum)
        _state.real_exit(128 + signum)


def install_sigterm_handler() -> None:
    try:
        _signal.signal(_signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):
        pass
