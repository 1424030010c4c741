"""In-process use by the pytest plugin, which loads this package by path into the test process.

The same import recorder and patch hooks hand their event dicts to a callback instead of the
events file. Only the recorder and the post-import hooks (gevent.monkey, eventlet, zope.event,
daemon) are installed: no fork/exit wrappers, no SIGTERM handler, no target.
"""

import os
import sys

from ._libraries import libraries, owners
from ._patches import maybe_emit_settings
from ._recorder import apply_loaded_hooks, install_recorder, uninstall_recorder
from ._stale import stale_references
from ._state import S

__all__ = [
    "emit_libraries",
    "emit_owners",
    "install_in_process",
    "stale_references",
    "uninstall_in_process",
]


def install_in_process(sink, app_roots=()) -> None:
    """Record imports and patch calls of the running process into ``sink`` (a callable).

    Events are the same dicts the probe writes as lines; a forked child's are dropped. ``step``
    is "in-process", so blocking reports are recorded as ``block`` events whenever the monitor
    sends them.
    """
    S.sink = sink
    S.step = "in-process"
    S.app_roots = tuple(os.path.join(os.path.abspath(r), "") for r in app_roots)
    monkey = sys.modules.get("gevent.monkey")
    if getattr(monkey, "saved", None):
        S.patched = True  # patched before we were installed (a launcher)
        S.first_patch_seen = True
    patcher = sys.modules.get("eventlet.patcher")
    if getattr(patcher, "already_patched", None):
        S.patched = True
        S.first_patch_seen = True
    install_recorder()
    apply_loaded_hooks()
    maybe_emit_settings()


def uninstall_in_process() -> None:
    """Stop recording: the finder leaves ``sys.meta_path``; the wrappers stay but go quiet."""
    uninstall_recorder()
    S.sink = None


def emit_owners() -> None:
    """The ``owners`` event (public for in-process use)."""
    owners()


def emit_libraries() -> None:
    """The ``libraries`` events for the libraries loaded so far (public for in-process use)."""
    libraries()
