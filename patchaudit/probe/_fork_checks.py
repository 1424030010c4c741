"""What breaks when a patched process forks: the facts a ``fork`` event needs beyond the call.

gevent supports forking after patching (its ``os.fork`` re-initialises the hub in the child),
so a fork alone is not a problem. These record what is: native threads the child will not
have, the event loop's descriptors a daemonizer closes, a fork that bypasses gevent's, and fork
hooks that use the hub in the child before gevent has re-initialised it.
"""

import sys

from ._events import emit
from ._frames import app_frame, module_name_of, stack, where
from ._hangs import thread_stacks
from ._state import PROBE_FILES, S, in_forked_child


def hub_fds():
    """Descriptors of the running hub's event loop (its epoll/kqueue fd); [] with no hub yet:
    gevent creates the hub on first use, so a process patched but not yet running gevent can
    still daemonize safely."""
    local = sys.modules.get("gevent._hub_local")
    get_hub = getattr(local, "get_hub_if_exists", None)
    try:
        hub = get_hub() if get_hub is not None else None
        fd = hub.loop.fileno() if hub is not None else None
    except Exception:
        return []
    return [fd] if isinstance(fd, int) and fd >= 0 else []


def fork_facts(frame) -> dict:
    """Fields of a fork event after patching: the other native threads (the child gets only
    the forking one), whether gevent's fork did it (``gevent_fork``: the child's hub is
    re-initialised), and whether a hub was running (``hub``)."""
    if not S.patched:
        return {}
    through_gevent = False
    f = frame
    while f is not None:
        if module_name_of(f) == "gevent.os":
            through_gevent = True
            break
        f = f.f_back
    return {
        "threads": thread_stacks(),
        "gevent_fork": through_gevent,
        "hub": bool(hub_fds()),
    }


def wrap_register_at_fork(real):
    """``os.register_at_fork`` that watches the app's ``after_in_child`` hooks: the hook runs
    inside the fork, before gevent re-initialises the hub, so a hook that waits on the hub (a
    sleep, a contended green lock, the threadpool, DNS) runs a loop shared with the parent,
    whose threads are gone (gevent#2023). Registrations by the probe itself pass through."""

    def register_at_fork(*args, **kwargs):
        caller = sys._getframe(1)
        hook = kwargs.get("after_in_child")
        if hook is not None and caller.f_code.co_filename not in PROBE_FILES:
            file, line = where(app_frame(caller))
            kwargs["after_in_child"] = _watched(hook, file, line)
        return real(*args, **kwargs)

    register_at_fork.__wrapped__ = real
    return register_at_fork


def _watched(hook, file, line):
    name = getattr(hook, "__qualname__", None) or repr(hook)

    def after_in_child():
        greenlet = sys.modules.get("greenlet")
        if greenlet is None or not in_forked_child():
            return hook()
        reported = []
        previous = greenlet.gettrace()
        running = greenlet.getcurrent()
        # With no hub in the parent, the hook starts a fresh one: nothing of the parent's.
        inherited = bool(hub_fds())

        def trace(event, args):
            if not reported and inherited and event in ("switch", "throw") and args[0] is running:
                reported.append(True)  # the origin is switched out: its frame is saved
                _emit_hook(name, file, line, running.gr_frame)
            if previous is not None:
                return previous(event, args)
            return None

        greenlet.settrace(trace)
        try:
            return hook()
        finally:
            greenlet.settrace(previous)

    return after_in_child


def _emit_hook(name, file, line, frame):
    """The hook switched greenlets in the child: emitted at once, as the child may hang here."""
    try:
        inner = app_frame(frame)
        emit(
            "fork_hook",
            hook=name,
            when="after_in_child",
            file=file,
            line=line,
            wait_file=where(inner)[0],
            wait_line=where(inner)[1],
            stack=stack(frame),
        )
    except Exception:
        pass
