"""The run job: ``patchaudit run -- COMMAND`` records every Python process the command starts.

The ``sitecustomize`` that ``patchaudit run`` puts first on ``PYTHONPATH`` (``_site/``) loads this
package under its private name in each interpreter the command starts, before the program's own
code, and calls :func:`start`. Nothing is imported, patched or served on the program's behalf:
the recorder, the patch table and the process wrappers only watch what the real launcher does.

Each process appends to its own ``events-<pid>.jsonl`` in ``$PATCHAUDIT_RUN_DIR``. A process made
by ``os.fork`` inherits its parent's imports and patches, so it does not record them again: its
``process`` event names the parent (``forked_from``) and how many bytes of the parent's file
were written at the fork (``inherited``); patchaudit prepends that part of the parent's timeline.

Facts are taken when they are exact: the stale scan and the owners right after the process's
first ``patch_all()`` returns (nothing the program does later can add a pre-patch reference), the
library checks and ``done`` when the process ends (``atexit``, ``os._exit``, or SIGTERM while the
program has no handler of its own).
"""

import atexit
import os
import sys

from . import _state
from ._audit_job import _emit_start
from ._errors import emit_error
from ._events import emit
from ._libraries import libraries, owners
from ._process_wrappers import install_process_wrappers, on_sigterm
from ._recorder import apply_loaded_hooks, install_recorder, record_file_import
from ._stale import stale_scan
from ._state import S

DIR_VAR = "PATCHAUDIT_RUN_DIR"
ROOTS_VAR = "PATCHAUDIT_RUN_ROOTS"

_R = {"finished": False, "offset": 0, "parent": None}


def _open_events():
    folder = os.environ.get(DIR_VAR)
    if not folder:
        return False
    path = os.path.join(folder, f"events-{_state.real_getpid()}.jsonl")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        S.fd = os.open(path, flags, 0o644)
    except OSError:
        S.fd = None
        return False
    return True


def _argv():
    argv = getattr(sys, "orig_argv", None) or []
    if not argv:  # an embedding program (uWSGI) gives its interpreter no command line
        try:
            with open("/proc/self/cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            argv = getattr(sys, "argv", None) or []
    return [str(a) for a in argv][:40]


def _python():
    """An interpreter that can run the probe's jobs: not the embedding program (``uwsgi``)."""
    name = os.path.basename(sys.executable or "")
    if name.startswith("python"):
        return sys.executable
    for candidate in ("python3", "python"):
        path = os.path.join(sys.prefix, "bin", candidate)
        if os.access(path, os.X_OK):
            return path
    return None


def _emit_process(forked_from, inherited):
    import time  # time is not patched by gevent until patch_all; time.time is never replaced

    emit(
        "process",
        pid=_state.real_getpid(),
        ppid=os.getppid(),
        argv=_argv(),
        executable=sys.executable,
        python=_python(),
        forked_from=forked_from,
        inherited=inherited,
        wall=time.time(),
    )


def _after_patch():
    """Right after the first ``patch_all()``: what survived it is exactly what is there now."""
    step = S.step
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if isinstance(main_file, str) and main_file not in _state.PROBE_FILES:
        # The script the interpreter ran is never imported, so the recorder did not see it;
        # its file is how import chains that start at ``__main__`` reach the app's own lines.
        record_file_import("__main__", main_file, "<run>", phase="pre-patch")
    try:
        S.step = "owners"
        owners()
        S.step = "stale"
        stale_scan()
    except Exception as exc:
        emit_error(exc, S.step)
    S.step = step


def _finish(reason):
    if _R["finished"] or S.fd is None:
        return
    _R["finished"] = True
    S.step = "libraries"
    try:
        libraries()
    except Exception:
        pass
    if reason is not None:
        emit("done", status="error" if S.errors else "ok", errors=S.errors, reason=reason)


def _before_fork():
    # Taken under the emit lock: no other thread is half-way through a line at the fork.
    S.lock.acquire()
    try:
        _R["offset"] = os.fstat(S.fd).st_size if S.fd is not None else 0
    except OSError:
        _R["offset"] = 0


def _after_fork_parent():
    S.lock.release()


def _after_fork_child():
    parent = _state.PROBE_PID
    _state.PROBE_PID = _state.real_getpid()
    S.lock = _state._thread.allocate_lock()
    _R["finished"] = False
    if S.fd is not None and not _R["offset"]:
        try:  # a fork made in C: no before-fork hook took the size, take it now
            _R["offset"] = os.fstat(S.fd).st_size
        except OSError:
            pass
    if S.fd is not None:
        try:
            os.close(S.fd)
        except OSError:
            pass
    if _open_events():
        _emit_process(parent, _R["offset"])
    _R["offset"] = 0


def _on_exit():
    _finish("exit")


def _wrap_os_exit():
    """``os._exit`` skips ``atexit``: take the end-of-process facts first."""
    inner = os._exit

    def _exit(code):
        _finish(None)  # the process wrapper's own _exit writes ``exit`` and ``done``
        inner(code)

    os._exit = _exit


def _on_sigterm(signum, frame):
    """SIGTERM while the program kept the default action: record the end, then die by it."""
    _finish(None)
    on_sigterm(signum, frame)  # writes where every greenlet was, ``done``, and re-raises


def _install_sigterm():
    import _signal

    try:
        if _signal.getsignal(_signal.SIGTERM) in (_signal.SIG_DFL, None):
            _signal.signal(_signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        pass


def _disarm_before_exec():
    """The hub timer's SIGPROF interval timer survives ``execve``, where SIGPROF's default
    action would end the new program: ``os.exec*`` all go through these two."""
    import _signal

    def wrap(real):
        def exec_(*args):
            try:
                _signal.setitimer(_signal.ITIMER_PROF, 0, 0)
            except (AttributeError, OSError, ValueError):
                pass
            return real(*args)

        return exec_

    for name in ("execv", "execve"):
        real = getattr(os, name, None)
        if real is not None:
            setattr(os, name, wrap(real))


def _excepthook(inner):
    def hook(tp, value, tb):
        try:
            S.step = "run"
            emit_error(value, "run")
        except Exception:
            pass
        inner(tp, value, tb)

    return hook


def start(startup_modules):
    """Install the recorder in this interpreter; returns False when it is not ours to record."""
    if not _open_events():
        return False
    S.mode = "run"
    S.startup_modules = startup_modules
    roots = [r for r in (os.environ.get(ROOTS_VAR) or "").split(os.pathsep) if r]
    S.app_roots = tuple(os.path.join(os.path.abspath(r), "") for r in roots)
    _emit_start()
    _emit_process(None, 0)
    S.step = "run"
    S.on_patched = _after_patch
    S.on_unseen_fork = _after_fork_child
    install_recorder()
    install_process_wrappers()
    _wrap_os_exit()
    _disarm_before_exec()
    apply_loaded_hooks()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_before_fork,
            after_in_parent=_after_fork_parent,
            after_in_child=_after_fork_child,
        )
    atexit.register(_on_exit)
    _install_sigterm()
    sys.excepthook = _excepthook(sys.excepthook)
    return True
