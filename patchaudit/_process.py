"""Child processes that die with patchaudit, however it dies.

One implementation of spawn / signal / kill / reap for every child patchaudit starts: the runtime
probe, the patch-list probe, bench servers and load workers. Each child runs
:func:`patchaudit._supervise.supervise` first (see there for the child's side). Here:

* :func:`spawn` starts it in a new session (its own process group) with the read end of a
  watchdog pipe, our pid, a deadline and a unique environment marker; the write end stays
  here, so when this process dies the child's supervisor sees EOF and ends the whole tree.
* :meth:`Child.kill` ends the group, anything re-parented to us, and anything still carrying
  the child's marker (an app that detached with ``setsid -f`` or a double fork), then waits.
* :func:`become_subreaper` makes this process a child subreaper, so detached grandchildren are
  re-parented to us rather than to init, and :func:`kill_all` ends every child still running.
* :func:`interruptible` turns SIGINT/SIGTERM into :class:`Interrupted` in the main thread, so a
  command can print what it gathered and exit 130/143; a second signal during the cleanup kills
  every child at once and exits immediately. While an interrupt is being handled, :func:`spawn`
  refuses to start anything (a worker thread must not start the next probe).
* The folders of :mod:`patchaudit._scratch` alive at spawn time are handed to the child's
  supervisor, which removes them if this process is killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any

from . import _scratch, _supervise
from ._proctable import group_parents, live_group_members, proc_table, processes_with_marker

__all__ = [
    "SUPERVISE_SCRIPT",
    "Child",
    "Interrupted",
    "become_subreaper",
    "capture",
    "interruptible",
    "interruption",
    "kill_all",
    "group_parents",
    "live_group_members",
    "processes_with_marker",
    "spawn",
]

#: Script that child scripts load by path to supervise themselves (see :mod:`._supervise`).
SUPERVISE_SCRIPT = _supervise.__file__
#: Extra seconds a child's supervisor waits past the caller's own deadline before killing.
DEADLINE_GRACE = 10.0

_LIVE: set[Child] = set()
_LIVE_LOCK = threading.Lock()
_PR_SET_CHILD_SUBREAPER = 36
# Scratch folders that still exist: removed on a second signal, handed to supervisors.


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 130 or 143.

    A ``BaseException``, like ``KeyboardInterrupt``: an ``except Exception`` that guards one
    file or one step must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")


class _State:
    """The active :func:`interruptible` block (one per process; nested blocks share it)."""

    handler: Callable[[int, object], None] | None = None
    signum: int | None = None  # the first signal, once it arrived
    stop_workers = False
    redeliver = False  # the next signal is our own re-delivery of the first one
    redeliveries = 0


class Child:
    """A supervised child process group (see :func:`spawn`)."""

    def __init__(self, process: subprocess.Popen, write_fd: int, marker: str) -> None:
        self.process = process
        self.marker = marker
        self._write_fd: int | None = write_fd
        self._lock = threading.Lock()  # kill() may run in a worker and in kill_all() at once

    @property
    def pid(self) -> int:
        """The supervisor's pid, which is also the process-group id."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Like ``Popen.wait`` (raises ``subprocess.TimeoutExpired``)."""
        return self.process.wait(timeout)

    def signal_group(self, signum: int) -> bool:
        """Signal the whole group; False when it no longer exists."""
        if self.process.returncode is not None and live_group_members(self.pid) == []:
            # The leader is reaped and the group empty: the number may belong to someone else.
            return False
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):  # gone, or the pgid was reused
            return False
        return True

    def signal_all(self, signum: int) -> bool:
        """Signal the group and every process with our marker, wherever it went (the program
        may have left the group with ``setsid``); False when none of them is left."""
        found = self.signal_group(signum)
        for pid in processes_with_marker(self.marker):
            try:
                os.kill(pid, signum)
                found = True
            except (ProcessLookupError, PermissionError):
                pass
        return found

    def kill(self, wait: float = 2.0) -> None:
        """SIGKILL the group and every process with our marker; wait until none is running.

        SIGKILL is asynchronous, so this loops until the group has no live member and no
        process carries the marker (or ``wait`` seconds pass). Victims re-parented to us (we may
        be a subreaper) are reaped; pids we never saw are left alone, since another ``Popen``
        may own them.
        """
        with self._lock:
            deadline = time.monotonic() + wait
            victims: set[int] = set()
            while True:
                self.signal_group(signal.SIGKILL)
                marked = processes_with_marker(self.marker)
                for pid in marked:
                    _kill_pid(pid)
                victims.update(marked)
                members = live_group_members(self.pid)
                victims.update(members or ())
                _reap_adopted(victims - {self.pid})
                if not marked and members == [] or time.monotonic() >= deadline:
                    break
                if members is None and not marked:  # no /proc: one killpg is all we can do
                    break
                time.sleep(0.005)
            try:
                self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not delivered
                pass
            _reap_adopted(victims - {self.pid})
            self._close_locked()

    def close(self) -> None:
        """Forget the child (closing our end of the watchdog pipe makes its supervisor end it)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        with _LIVE_LOCK:
            _LIVE.discard(self)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    deadline: float | None = None,
    pass_fds: Sequence[int] = (),
) -> Child:
    """Start ``argv`` (a script that calls :func:`~patchaudit._supervise.supervise` first).

    ``deadline`` is the most seconds the child may live; its supervisor kills the tree
    :data:`DEADLINE_GRACE` seconds after that even if nobody asks. The live :func:`scratch_dir`
    folders are handed to the supervisor, which removes them if this process dies first.
    Raises ``OSError`` when the program cannot be started, and :class:`Interrupted` while an
    interrupt is being handled (nothing new starts then).
    """
    _refuse_if_interrupted()
    child_env = dict(os.environ if env is None else env)
    marker = uuid.uuid4().hex
    read_fd, write_fd = os.pipe()
    child_env[_supervise.FD_VAR] = str(read_fd)
    child_env[_supervise.PARENT_VAR] = str(os.getpid())
    child_env[_supervise.MARKER_VAR] = marker
    child_env[_supervise.SCRIPT_VAR] = SUPERVISE_SCRIPT
    scratch = _scratch.live()
    if scratch:
        child_env[_supervise.CLEANUP_VAR] = os.pathsep.join(scratch)
    else:
        child_env.pop(_supervise.CLEANUP_VAR, None)
    if deadline is not None:
        child_env[_supervise.DEADLINE_VAR] = f"{deadline + DEADLINE_GRACE:.3f}"
    else:
        child_env.pop(_supervise.DEADLINE_VAR, None)
    try:
        process = subprocess.Popen(
            list(argv),
            env=child_env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(read_fd, *pass_fds),
            start_new_session=True,
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    child = Child(process, write_fd, marker)
    with _LIVE_LOCK:
        _LIVE.add(child)
    # An interrupt between the first check and the registration: kill_all() may have missed it.
    if _State.signum is not None:
        child.kill()
        _refuse_if_interrupted()
    return child


def capture(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stderr: bool = True,
) -> tuple[int | None, bytes, bytes]:
    """Run a short job (:func:`spawn`'s kind of ``argv``) to its end: (exit status, stdout,
    stderr). Its whole tree is killed at the end, on timeout and on an interrupt. Raises
    ``OSError`` when it cannot start and ``subprocess.TimeoutExpired`` after ``timeout``
    seconds; each caller words those for its user. ``stderr=False`` discards it."""
    child = spawn(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
        deadline=timeout,
    )
    try:
        out, err = child.process.communicate(timeout=timeout)
    finally:
        child.kill()
        for stream in (child.process.stdout, child.process.stderr):
            if stream is not None:
                stream.close()
    return child.returncode, out, err or b""


def interruption(exc: BaseException | None = None) -> Interrupted | None:
    """The interrupt behind ``exc``: ``exc`` itself, or, while an interrupt is being handled
    (inside :func:`interruptible`, after its first signal), that interrupt -- whatever it
    turned into on its way out (a library's cleanup that failed because the signal cut it
    short, such as a pool joining a thread it never started). None otherwise."""
    if isinstance(exc, Interrupted):
        return exc
    if _State.signum is not None:
        return Interrupted(_State.signum)
    return None


def _refuse_if_interrupted() -> None:
    if _State.signum is not None:
        raise Interrupted(_State.signum)


def kill_all(wait: float = 2.0) -> None:
    """Kill every child still running (an interrupted command's cleanup)."""
    with _LIVE_LOCK:
        children = list(_LIVE)
    for child in children:
        child.kill(wait=wait)


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux); nothing elsewhere, where the markers still work."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # no libc symbol: the supervisors and markers still end everything
        pass


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap_adopted(pids: set[int]) -> None:
    """Reap those of ``pids`` that were re-parented to us, so they do not stay zombies."""
    if not pids:
        return
    me = os.getpid()
    table = proc_table() or {}
    for pid in pids:
        entry = table.get(pid)
        if entry is not None and entry[0] == me:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _forked_workers() -> list[int]:
    """Our direct children in our own process group: forks of us, such as pool workers.

    Everything :func:`spawn` starts has a session of its own, so it is not among them.
    """
    me, group = os.getpid(), os.getpgrp()
    return [
        pid
        for pid, (ppid, pgid, zombie) in (proc_table() or {}).items()
        if ppid == me and pgid == group and not zombie
    ]


@contextmanager
def interruptible(*, stop_workers: bool = False) -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`Interrupted` in the main thread while the block runs.

    The first signal raises; the caller cleans up and reports. A second one while that runs,
    or after the block until the process exits, kills every child without waiting, removes the
    :func:`scratch_dir` folders and exits at once with the first signal's code. With
    ``stop_workers`` the first signal also SIGKILLs the forks of this process that share its
    process group (a ``multiprocessing`` pool), so the pool's shutdown does not wait for their
    work. Forks made inside the block get the default SIGINT/SIGTERM actions instead of this
    handler (no traceback from a pool worker); forks made after the first signal exit at once.
    A signal that lands where Python cannot raise (an at-fork hook, a ``__del__``) is delivered
    again instead of being printed and lost. A block nested in another one changes nothing.
    Outside the main thread (where handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _State.handler is not None:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if _State.signum is not None:
            if not _State.redeliver:
                _die(_State.signum)
            _State.redeliver = False
            raise Interrupted(_State.signum)
        _State.signum = signum
        if _State.stop_workers:
            for pid in _forked_workers():
                _kill_pid(pid)
        raise Interrupted(signum)

    previous_hook = sys.unraisablehook

    def unraisable(args: Any) -> None:
        # The signal landed where Python cannot raise (an at-fork hook such as logging's, a
        # __del__): it would be printed as "Exception ignored" and lost. Deliver it again a
        # little later, from another thread, so that it surfaces in ordinary code and not in
        # this hook (a few times at most, in case it keeps landing in such places).
        if isinstance(args.exc_value, Interrupted) and _State.signum is not None:
            if _State.redeliveries < 20:
                _State.redeliveries += 1
                _State.redeliver = True
                timer = threading.Timer(0.01, _signal_main_thread, (_State.signum,))
                timer.daemon = True
                timer.start()
            return
        previous_hook(args)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}
    _reset_state(handler, stop_workers)
    sys.unraisablehook = unraisable
    try:
        for s in signals:
            signal.signal(s, handler)
        yield
    finally:
        first = _State.signum
        for signum, old in previous.items():
            # Once interrupted, the process is on its way out: a later signal (while it prints,
            # joins threads, shuts down) still ends it at once, quietly, with the first code.
            signal.signal(signum, old if first is None else _dying(first))
        sys.unraisablehook = previous_hook
        _reset_state(None, False)


def _dying(first: int) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        _die(first)

    return handler


def _signal_main_thread(signum: int) -> None:
    ident = threading.main_thread().ident
    if ident is not None:
        try:
            signal.pthread_kill(ident, signum)
        except (OSError, ValueError):  # the process is already on its way out
            pass


def _reset_state(handler: Callable[[int, object], None] | None, stop_workers: bool) -> None:
    _State.handler, _State.signum, _State.stop_workers = handler, None, stop_workers
    _State.redeliver, _State.redeliveries = False, 0


def _die(signum: int) -> None:
    """The second signal: end every child and scratch folder without waiting, then exit."""
    for child in list(_LIVE):
        child.signal_group(signal.SIGKILL)
        for pid in processes_with_marker(child.marker):
            _kill_pid(pid)
    for pid in _forked_workers():
        _kill_pid(pid)
    _scratch.remove_all()
    os._exit(128 + signum)


def _after_fork_in_child() -> None:
    """A plain fork of this process (a pool worker) must not act as patchaudit's main process:
    no interrupt handler of ours (it would raise in the worker and print a traceback), no
    watchdog write ends (a kill -9 of patchaudit must still close every one), no children.
    A fork made while an interrupt is being handled ends at once: nothing may start then, and
    the first signal's kill of the forks has already happened."""
    global _LIVE_LOCK
    if _State.signum is not None:
        os._exit(128 + _State.signum)
    _LIVE_LOCK = threading.Lock()  # another thread may have held it at the fork
    for child in list(_LIVE):
        if child._write_fd is not None:
            try:
                os.close(child._write_fd)
            except OSError:
                pass
            child._write_fd = None
    _LIVE.clear()
    _scratch.forget_all()  # the parent's folders: not this child's to remove
    handler = _State.handler
    _reset_state(None, False)
    if handler is not None:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                if signal.getsignal(s) is handler:
                    signal.signal(s, signal.SIG_DFL)
            except (ValueError, OSError):
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
