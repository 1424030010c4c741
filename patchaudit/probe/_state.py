"""Process-wide probe state and the originals captured before the app can replace them.

Loaded after the supervisor's fork, so the pids and the thread ident are the probe's own.
"""

import _thread
import importlib
import os
from time import perf_counter

T0 = perf_counter()

real_getpid = os.getpid
real_write = os.write
real_exit = os._exit
real_get_ident = _thread.get_ident
PROBE_PID = real_getpid()
MAIN_IDENT = real_get_ident()

IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep
IMPORTLIB_UTIL = os.path.join(IMPORTLIB_DIR, "util.py")
STDLIB_DIR = os.path.dirname(os.__file__) + os.sep


def _probe_files() -> frozenset:
    """Every source file of the probe package (the boot script included), as code names them."""
    folder = os.path.dirname(__file__)
    names = set()
    try:
        entries = os.listdir(folder)
    except OSError:
        entries = [os.path.basename(__file__)]
    for entry in entries:
        if entry.endswith(".py"):
            path = os.path.join(folder, entry)
            names.update((path, os.path.abspath(path), os.path.realpath(path)))
    return frozenset(names)


PROBE_FILES = _probe_files()


class S:
    """Mutable probe state (a namespace, so functions need no ``global`` statements)."""

    fd = None  # events file descriptor; None once unusable
    sink = None  # in-process use (the pytest plugin): a callable taking each event dict
    lock = _thread.allocate_lock()  # a native lock: taken before anything can patch threading
    spec = {}
    mode = "as-is"
    step = "startup"
    startup_modules = []  # sorted sys.modules when the boot script started
    patched = False  # a patch call has started: import phase is "post-patch" from then on
    patch_depth = 0  # >0 while inside a wrapped patch call (nested calls are not events)
    probe_patch_label = None  # "<patchaudit:MODE>" while the probe patches on the mode's behalf
    first_patch_seen = False
    event_patch_open = False  # a patch_all seen only through GeventWillPatchAllEvent is running
    settings_emitted = False
    importing_target = False
    app_roots = ()
    serve_path = None
    errors = 0
    importers = {}  # module -> importer, for import_chain
    import_files = {}  # module -> file, to name the module behind a SyntaxError
    hooked = set()  # post-import hooks already applied (module names)
    on_patched = None  # the run job: called once, right after the first gevent patch_all()
    on_unseen_fork = None  # the run job: a fork that no at-fork hook saw was noticed
    master_threads = frozenset()  # idents of threads gunicorn's master steps left: not in a fork


def in_forked_child() -> bool:
    if real_getpid() == PROBE_PID:
        return False
    if S.on_unseen_fork is not None:
        # The run job follows forks; one made in C (uWSGI's workers) ran no at-fork hook.
        S.on_unseen_fork()
        return real_getpid() != PROBE_PID
    return True


def leave_if_forked_child() -> None:
    """The probe's own code regained control in a fork of the app: vanish without reporting."""
    if in_forked_child():
        real_exit(0)
