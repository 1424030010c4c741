"""The child side of :mod:`patchaudit._process`: a supervisor that outlives nothing it guards.

Every long-lived child patchaudit starts (the probe, for its audit and its patch-list jobs,
bench servers and load workers) calls :func:`supervise` first thing. Without the environment that
:func:`patchaudit._process.spawn` sets it returns at once and does nothing, so the scripts still
run by hand. With it, the process forks:

* the **child** returns from :func:`supervise` and goes on as the real program (it imports the
  audited app, serves, loads...);
* the **parent** stays behind as a tiny supervisor and never returns. It is the leader of the
  process group ``spawn`` made, a child subreaper (``PR_SET_CHILD_SUBREAPER``: whatever the app
  forks and detaches with ``setsid`` is re-parented to it), and it dies with patchaudit
  (``PR_SET_PDEATHSIG`` wakes it). It waits on the read end of a pipe whose only write end
  patchaudit holds: EOF means patchaudit is gone, however it died (``kill -9`` included). Then,
  or when its own deadline passes, or when the program exits, it kills every process of its group,
  everything re-parented to it, and every process carrying the run's environment marker, and
  exits the way the program did (same code, or the same signal). When patchaudit itself died,
  it also removes the scratch folders patchaudit named in :data:`CLEANUP_VAR`.

The supervisor ignores SIGINT, SIGTERM and SIGHUP: a timeout's SIGTERM to the group is for the
program (which reports where it was stuck), and an app that signals its parent hits the
supervisor, not patchaudit. Its other signals only wake it (through ``signal.set_wakeup_fd``),
never raise: an exception escaping at a random point would leave the tree running.

Constraints: stdlib only, loaded by path under a private name (never ``import patchaudit``), old
syntax, and nothing imported at module level beyond ``os``, ``sys`` and ``_signal`` -- the child
inherits ``sys.modules``, and the probe reports what was loaded before the app patched. The
supervisor imports what it needs after the fork.

A child script loads this file by the path in :data:`SCRIPT_VAR`, right after taking its
``sys.modules`` snapshot, and calls :func:`supervise`. For both jobs of the probe (the audit and
the patch lists) that is its boot script's ``_supervise()`` (``patchaudit/probe/__main__.py``),
the one loader they share; the bench children (``patchaudit/_exec.py``, ``_serve.py``)
carry their own few lines::

    path = os.environ.get("PATCHAUDIT_SUPERVISE_SCRIPT")
    if path:
        import importlib.util
        spec = importlib.util.spec_from_file_location("_patchaudit_supervise", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.supervise()
"""

import _signal
import os
import sys

#: Environment variables set by :func:`patchaudit._process.spawn` (kept in sync by a test).
FD_VAR = "PATCHAUDIT_WATCHDOG_FD"
PARENT_VAR = "PATCHAUDIT_PARENT_PID"
DEADLINE_VAR = "PATCHAUDIT_DEADLINE"
MARKER_VAR = "PATCHAUDIT_RUN_MARKER"
#: Path of this file, so a child script can find and load it.
SCRIPT_VAR = "PATCHAUDIT_SUPERVISE_SCRIPT"
#: ``os.pathsep``-separated folders to remove when patchaudit dies before removing them.
CLEANUP_VAR = "PATCHAUDIT_CLEANUP"

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_POLL = 0.25  # seconds between checks for a parent that is gone (belt and braces for the pipe)
# After EOF on the pipe: how long to wait for the re-parenting that proves patchaudit died
# (the kernel closes a dying process's descriptors before it re-parents its children).
_DEATH_PROOF = 1.0


def supervise():
    """Fork a supervisor if started by :func:`patchaudit._process.spawn`; return in the child."""
    raw_fd = os.environ.pop(FD_VAR, None)
    os.environ.pop(SCRIPT_VAR, None)
    raw_parent = os.environ.pop(PARENT_VAR, "")
    deadline_text = os.environ.pop(DEADLINE_VAR, "")
    cleanup = [p for p in os.environ.pop(CLEANUP_VAR, "").split(os.pathsep) if p]
    if raw_fd is None:
        return
    try:
        fd = int(raw_fd)
        parent = int(raw_parent or 0)
        seconds = float(deadline_text) if deadline_text else None
        os.fstat(fd)
    except (ValueError, OSError):  # not from spawn after all: run unsupervised
        return
    marker = os.environ.get(MARKER_VAR, "")  # stays: the program's descendants carry it
    # Anything still buffered would be written twice, once by each side of the fork.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        pid = os.fork()
    except OSError:
        os.close(fd)  # no supervisor: patchaudit still kills the process group
        return
    if pid == 0:
        os.close(fd)  # only the supervisor watches the pipe
        return
    try:
        _run(pid, fd, parent, seconds, marker, cleanup)
    finally:
        os._exit(70)  # _run never returns normally; this only guards against a bug in it


def _wake(signum, frame):
    """Does nothing: the C-level handler has already written to the wakeup fd."""


def _run(child, fd, parent, seconds, marker, cleanup):
    for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(signum, _signal.SIG_IGN)
    # Imported after the fork: the program never sees them loaded on its behalf.
    import select
    import time

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    _signal.set_wakeup_fd(wake_w)
    for signum in (_signal.SIGCHLD, _signal.SIGUSR1):
        _signal.signal(signum, _wake)
    # The parent's death wakes us (SIGUSR1) to clean up; SIGKILL here would leave the tree.
    _prctl(_PR_SET_PDEATHSIG, _signal.SIGUSR1)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    deadline = None if seconds is None else time.monotonic() + seconds
    gone = bool(parent) and os.getppid() != parent  # died before PDEATHSIG was armed
    eof = False
    status = None
    # poll, not select: the watchdog fd keeps patchaudit's number, which may exceed FD_SETSIZE.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    poller.register(wake_r, select.POLLIN)
    while not gone and not eof:
        status = _reap(child, status)
        if status is not None:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        wait = _POLL if deadline is None else max(0.0, min(_POLL, deadline - now))
        try:
            ready = [ready_fd for ready_fd, _mask in poller.poll(int(wait * 1000) + 1)]
        except OSError:
            ready = []
        if fd in ready:
            try:
                eof = os.read(fd, 64) == b""  # EOF: every write end is closed
            except OSError:  # the watchdog is unusable: the parent checks still work
                poller.unregister(fd)
        if wake_r in ready:
            _drain(wake_r)
        if parent and os.getppid() != parent:
            gone = True
    status = _kill_guarded(child, marker, status)
    if eof and not gone and parent:
        gone = _parent_died(parent, wake_r, time)
    if gone:
        _remove(cleanup)
    _exit_like(status)


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass


def _parent_died(parent, wake_r, time):
    """After EOF: True once we are re-parented (patchaudit died), False if it just let go."""
    limit = time.monotonic() + _DEATH_PROOF
    while os.getppid() == parent:
        if time.monotonic() >= limit:
            return False
        time.sleep(0.01)
    _drain(wake_r)
    return True


def _reap(child, found):
    """The program's wait status once it has exited (else ``found``); reaps adopted orphans."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        except InterruptedError:
            continue
        if pid == 0:
            return found
        if pid == child:
            found = status


def _kill_guarded(child, marker, status):
    """SIGKILL everything we guard until nothing is left; the program's status if it ended."""
    import time

    me = os.getpid()
    for _round in range(200):
        victims = [p for p in _guarded(me, marker) if p != me]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, _signal.SIGKILL)
            except OSError:
                pass
        status = _reap(child, status)
        time.sleep(0.005)
    # The program is dead or a zombie by now: collect its status (and any last orphans).
    return _reap(child, status)


def _remove(paths):
    if not paths:
        return
    import shutil

    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _exit_like(status):
    """Exit as the program did: same code, or the same signal (SIGKILL if it never ended)."""
    if status is None:  # patchaudit is gone or the deadline passed: the program was killed
        os.kill(os.getpid(), _signal.SIGKILL)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import resource

            # Mirroring SIGSEGV/SIGABRT must not leave a second core file in the app's folder.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except Exception:
            pass
        if sig != _signal.SIGKILL:  # its action cannot be changed (and need not be)
            try:
                _signal.signal(sig, _signal.SIG_DFL)
                _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [sig])
            except (OSError, ValueError):
                pass
        try:
            os.kill(os.getpid(), sig)
        except OSError:
            pass
        os._exit(128 + sig)  # a signal whose default action does not terminate
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _guarded(me, marker):
    """Live pids in our process group, below us, or carrying the run marker (never zombies)."""
    pgid = os.getpgid(0)
    needle = (MARKER_VAR + "=" + marker).encode() if marker else None
    parents = {}
    groups = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/" + entry + "/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 3 or fields[0] == b"Z":
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        groups[pid] = int(fields[2])
    found = set()
    for pid in parents:
        if groups[pid] == pgid or _descends(pid, me, parents):
            found.add(pid)
        elif needle is not None and _has_marker(pid, needle):
            found.add(pid)
    return sorted(found)


def _descends(pid, ancestor, parents):
    seen = 0
    while pid in parents and seen < 4096:
        pid = parents[pid]
        if pid == ancestor:
            return True
        seen += 1
    return False


def _has_marker(pid, needle):
    try:
        with open("/proc/" + str(pid) + "/environ", "rb") as fh:
            return needle in fh.read().split(b"\0")
    except OSError:
        return False


def _prctl(option, value):
    """Linux prctl(2); silently nothing elsewhere (the pipe still works)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except Exception:
        pass
