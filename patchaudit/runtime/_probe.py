"""Self-contained child-process probe: import a real app the way its server would, and record.

Run as ``python /path/_probe.py --spec-file SPEC.json`` with the *application's* interpreter
(``patchaudit.runtime._launcher.run_probe`` does this). It imports the target module, applies
monkey-patching at the point the chosen server would, optionally serves the WSGI callable with
``gevent.pywsgi`` and drives real requests at it, and writes what it saw as JSON Lines.

Constraints (keep them when editing):

* stdlib + gevent only (eventlet and zope.event are used only if the app brings them in); never
  import patchaudit: this file is run by path, outside the package, maybe in another venv;
* import nothing that gevent patches (socket, ssl, threading, select, queue, subprocess, ...)
  before the target has been imported and patched: doing so would change what is audited. Even
  ``importlib.metadata`` is off limits at start-up (it imports ``zipfile``, which imports
  ``threading``), so package versions are read from ``*.dist-info/METADATA`` by hand;
* never raise out: every step runs guarded and reports an ``error`` event instead;
* a forked child of the application never writes results and never leaves the process group;
* started by patchaudit, it first forks its supervisor (``_supervise_first``, right after the
  ``sys.modules`` snapshot): the probe then runs as the supervisor's child, so ``os.getppid()``
  of the app is the supervisor, and the launcher's ``ProbeRun.pid`` is the supervisor's pid.

The pytest plugin also loads this file by path into the test process and calls
:func:`install_in_process`: the same import recorder and patch-call hooks then hand their event
dicts to a callback instead of the events file (see that function), and
:func:`stale_references` returns the stale-reference scan as a list.

Spec (JSON object read from ``--spec-file``)
--------------------------------------------

``target``
    ``{"kind": "module"|"file", "module": "app.wsgi", "file": "/abs/app.py"|null,
    "callable": "app"|null, "factory": bool}``. For ``kind == "file"`` the file is executed as
    a module named ``module`` (default: the file's stem). ``callable`` may be dotted
    (``"server.app"``) and may end in ``"()"`` (gunicorn's ``module:factory()``), which is the
    same as ``factory: true``: the factory is called with no arguments.
``mode``
    ``"as-is"``: import the target, which may patch itself. ``"gunicorn"``: ``patch_all()`` then
    import (gunicorn's gevent worker). ``"gunicorn-preload"`` and ``"uwsgi"``: import (and resolve
    the callable) then ``patch_all()``. ``"patch-first"``: baseline; patch, import, resolve, then
    only ``settings`` + stale scan (no owners, serving or library checks). Steps after import:
    target, (mode patch), owners, stale scan, serve, libraries; when the import fails, the
    target, mode patch and serving are skipped but the process is still described.
``chdir``, ``pythonpath``
    Working directory and ``sys.path`` entries (inserted at the front if missing).
``events_path``
    Where events are appended (one JSON object per line, flushed as it happens).
``serve``
    ``{"paths": ["/"], "requests": 20, "concurrency": 10, "max_blocking": 0.1,
    "request_timeout": 10}``; null or no paths: do not serve.
``app_roots``
    Directories whose files count as application code (for ``fork`` frames).

Events (the contract with the part that turns them into findings)
-------------------------------------------------------------------

Every line is ``{"event": NAME, "t": seconds since probe start, ...}``. Lines written by a forked
child of the application also carry ``"pid"`` and ``"forked_child": true``; a forked child writes
only facts about itself (``import``, ``fork``), never ``patch``, ``target``, ``serve``, ``error``
or ``done``: it exits silently as soon as the probe's code regains control. "Probe step" values
used in ``phase`` fields (except ``import.phase``) are ``"startup" | "patch" | "import" |
"target" | "owners" | "stale" | "serve" | "libraries"``.
A *frame* is ``{"file", "line", "function", "code"}`` (``code``: the source line or null); frame
lists are outermost first, innermost last.

``start``
    ``executable``, ``python_version`` ("3.11.7"), ``implementation``, ``platform``, ``pid``,
    ``gevent_version`` (from dist-info, gevent not imported; null if absent),
    ``eventlet_version`` (or null), ``mode``, ``target`` (the spec's target),
    ``startup_modules`` (sorted ``sys.modules`` when the probe started), ``probe_modules``
    (modules the probe itself added before the app ran: json, linecache, ...).
``import``
    First import of each module, in order: ``module``, ``importer`` (``__name__`` of the module
    whose code triggered it; ``"<target>"`` for the target module and its parent packages;
    ``"<probe>"`` when the probe itself imported it), ``line`` (the importer's line that was
    executing when the import started, or null), ``file`` (spec origin, or null for built-in,
    frozen and namespace modules), ``phase`` (``"pre-patch"`` until the first patch call starts,
    then ``"post-patch"``), ``found`` (false: no finder found it, i.e. it raised
    ModuleNotFoundError; null: a legacy finder was involved and the probe could not tell).
    ``importlib.util.find_spec()`` look-ups are not imports and are not recorded.
``patch``
    One per outermost patch call (calls nested in ``patch_all`` are not events):
    ``framework`` ("gevent"|"eventlet"), ``function`` ("patch_all", "patch_socket", ...,
    "monkey_patch"), ``args`` (number of positional args; null when seen only through the
    event), ``kwargs`` (JSON-safe), ``file``/``line`` (caller: first frame outside
    gevent/eventlet/zope/the probe; ``"<patchaudit:MODE>"`` and null when the probe patched
    because of the mode), ``main_thread`` (bool), ``threads`` (names from
    ``threading.enumerate()``, or ``["MainThread"]`` if threading was not imported),
    ``modules_before`` (sorted ``sys.modules``; only on the first patch call of the process,
    otherwise absent), ``returned`` (JSON-safe return value), ``raised`` ("Type: message" or
    null), ``warnings`` (list of ``{"category", "message", "file", "line"}``: gevent's
    ``MonkeyPatchWarning`` s raised by the call; for eventlet every warning raised by the call;
    they are recorded, not shown), ``via`` ("wrapper", or "GeventWillPatchAllEvent" when the
    call bypassed the wrapper and was only seen through gevent's event). eventlet adds
    ``already_patched`` (``eventlet.patcher.already_patched`` after the call).
``settings``
    After the first gevent patch: ``settings``
    (``saved['_gevent_saved_patch_all_module_settings']`` or null) and ``saved``
    (``{target module: sorted names}``).
``fork``
    The app called ``what`` = ``"os.fork"``, ``"os.forkpty"``, ``"os.setsid"``,
    ``"os.setpgrp"``, ``"os.setpgid"``, ``"os.closerange"`` or ``"daemon.DaemonContext.open"``:
    ``file``/``line`` (innermost frame under ``app_roots``, else the first frame outside the
    probe, gevent and the stdlib), ``after_patch`` (bool), ``phase`` (probe step), ``contained``
    (true when the probe suppressed the call: setsid/setpgrp/setpgid in a forked child, so the
    child stays in the launcher's process group), ``via`` (``__name__`` of the module that made
    the call, e.g. the app module, ``multiprocessing.popen_fork`` or ``daemon.daemon``). The
    fork+exec inside ``gevent.subprocess`` is not reported (like stdlib subprocess's, which
    forks in C).
``exit``
    The app called ``os._exit`` in the probe process: ``code``, ``file``, ``line``, ``phase``.
    Followed by ``done``.
``terminated``
    The probe got SIGTERM (the launcher's timeout): ``signal``, ``phase``, ``serve_path``,
    ``stack`` (main thread, frames), ``main_greenlet_stack`` (frames of the switched-out main
    greenlet when the signal landed in gevent's hub -- that is where the app is stuck; else
    null). Followed by ``done``.
``target``
    ``module``, ``file``, ``callable`` (name resolved or null), ``wsgi`` (found and callable),
    ``reason`` (why not, else null), ``factory_called`` (bool).
``owners``
    ``owners``: ``{"socket.socket": "gevent._socket3", "threading.Lock": ..., "threading.Thread",
    "time.sleep", "select.select", "ssl.SSLContext", "queue.Queue"}`` -> ``__module__`` of the
    current object, null when that module was never imported.
``stale``
    One per holder of an unpatched original from ``gevent.monkey.saved``: ``holder``
    ("app.throttle" or "app.pool.Pool"), ``holder_kind`` ("module"|"class"|"subclass"),
    ``holder_module``, ``holder_file`` (module ``__file__`` or null), ``name`` (attribute in the
    holder; ``"__bases__"``/``"__mro__"`` for direct/indirect subclasses), ``original``
    ("time.sleep"). Skipped holders: gevent/eventlet/zope/greenlet, the probe, the module(s)
    the original was saved from, and the built-in/stdlib C modules that implement originals
    (``posix``, ``_socket``, ``_thread``, ...). Interpreter start-up still leaves a few
    (``functools.RLock``, ``reprlib.get_ident``, ...): diff against a ``patch-first`` run.
``stale_scan``
    After the scan: ``originals`` (how many saved originals were scanned), ``holders`` (stale
    events written). Absent when gevent never patched.
``serve``
    Per path: ``port``, ``path``, ``single`` (latency of one request alone, null if it failed),
    ``single_status``, ``single_error``, ``requests``, ``concurrency``, ``wall`` (seconds for the
    concurrent batch), ``latencies`` (per request, null if failed), ``statuses``
    (``{"200": 19, "none": 1}``), ``errors`` (error strings of the failed requests),
    ``server_errors`` (lines pywsgi wrote to its error log, at most 20).
    Or, when serving was not attempted: ``{"skipped": reason}``.
``request_error``
    The app raised while handling a request (once per distinct path/type/message): ``path``,
    ``type``, ``message``, ``traceback`` (frames).
``block``
    gevent's monitor thread saw the hub blocked: ``blocking_time`` (gevent passes its
    *threshold*, ``GEVENT_MAX_BLOCKING_TIME``, not the measured time), ``phase`` (probe step),
    ``path`` (request path being served, or null), ``greenlet`` (repr), ``stack`` (frames of the
    hub's thread when the report was made, so the innermost line is wherever the blocking code
    was at that moment: for a CPU loop, any line of the loop), ``stack_source`` ("frames" or
    "report" when parsed from gevent's text report). Reported once per monitor period while
    the hub stays blocked, so one long block gives several events. Only while app code runs
    (steps ``import``, ``target`` and the requests of ``serve``): reports that land while the
    probe itself works (patching for the mode, owners, the stale scan) are dropped.
``libraries``
    One per checked library present in ``sys.modules``: ``library``, ``check``, ``ok``
    (true/false, or null when not applicable because gevent did not patch socket), ``detail``.
``error``
    ``kind`` ("import-error"|"syntax-error"|"system-exit"|"exception"), ``type`` (qualified
    unless builtin), ``message``, ``traceback`` (frames, without the probe's and importlib's;
    importlib's are kept when nothing else is left),
    ``import_chain`` (module names from the first one the target import triggered to the one
    that failed, e.g. ``["app", "app.a", "app.b", "missing_mod"]``; ``[]`` when unknown),
    ``phase`` (probe step), ``code`` (SystemExit only), ``name`` (ImportError's ``name``),
    ``file``/``line`` (SyntaxError only).
``done``
    Last line: ``status`` ("ok"|"error"), ``errors`` (number of error events), ``reason``
    ("os._exit"|"SIGTERM"|null).
"""

import sys

_STARTUP_MODULES = sorted(sys.modules)

import _signal  # noqa: E402  (everything below must come after the startup snapshot)
import _thread  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402
from time import perf_counter  # noqa: E402

_T0 = perf_counter()

# Running ``python path/_probe.py`` puts this directory first on sys.path, where it could shadow
# application or stdlib modules. Drop it before anything else is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == _HERE:
    del sys.path[0]


def _supervise_first():
    """Started by patchaudit (``_process.spawn``): fork its supervisor, go on as its child.

    The supervisor kills this process and everything the app starts (even detached) if
    patchaudit dies, and takes the app's signals to its parent. It is loaded by path under a
    private name, not registered in ``sys.modules``, and imports nothing the app could notice.
    Only when run as a script: the pytest plugin loads this file into the test process.
    """
    path = os.environ.get("PATCHAUDIT_SUPERVISE_SCRIPT")
    if not path or __name__ != "__main__":
        return
    try:
        spec = importlib.util.spec_from_file_location("_patchaudit_supervise", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # still contained by the launcher's process-group kill
        sys.stderr.write(f"patchaudit probe: cannot load the supervisor {path}: {exc}\n")
        return
    module.supervise()


_supervise_first()

# ---------------------------------------------------------------------------------------------
# Process-wide state
# ---------------------------------------------------------------------------------------------

# Originals captured before the app (or gevent) can replace them.
_real_getpid = os.getpid
_real_write = os.write
_real_exit = os._exit
_real_get_ident = _thread.get_ident
_PROBE_PID = _real_getpid()
_MAIN_IDENT = _real_get_ident()
_PROBE_FILES = frozenset([__file__, os.path.abspath(__file__)])
_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep
_IMPORTLIB_UTIL = os.path.join(_IMPORTLIB_DIR, "util.py")
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep

# Frames from these packages are never "the caller" of a patch or fork.
_MACHINERY_PREFIXES = ("gevent", "eventlet", "zope", "greenlet")
_BOOKKEEPING_PREFIX = "_gevent_saved_"
_SETTINGS_KEY = "_gevent_saved_patch_all_module_settings"
_OWNER_NAMES = (
    "socket.socket",
    "threading.Lock",
    "threading.Thread",
    "time.sleep",
    "select.select",
    "ssl.SSLContext",
    "queue.Queue",
)


class _S:
    """Mutable probe state (a namespace, so functions need no ``global`` statements)."""

    fd = None  # events file descriptor; None once unusable
    sink = None  # in-process use (the pytest plugin): a callable taking each event dict
    lock = _thread.allocate_lock()  # a native lock: taken before anything can patch threading
    spec = {}
    mode = "as-is"
    step = "startup"
    patched = False  # a patch call has started: import phase is "post-patch" from then on
    patch_depth = 0  # >0 while inside a wrapped patch call (nested calls are not events)
    probe_patch_label = None  # "<patchaudit:MODE>" while the probe patches on the mode's behalf
    first_patch_seen = False
    event_patch_open = False  # a patch_all seen only through GeventWillPatchAllEvent is running
    settings_emitted = False
    importing_target = False
    target_module = None
    app_roots = ()
    serve_path = None
    errors = 0
    importers = {}  # module -> importer, for import_chain
    import_files = {}  # module -> file, to name the module behind a SyntaxError
    hooked = set()  # post-import hooks already applied (module names)


def _in_forked_child():
    return _real_getpid() != _PROBE_PID


def _leave_if_forked_child():
    """The probe's own code regained control in a fork of the app: vanish without reporting."""
    if _in_forked_child():
        _real_exit(0)


# ---------------------------------------------------------------------------------------------
# Event writer
# ---------------------------------------------------------------------------------------------


def _jsonable(value, depth=0):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v, depth + 1) for v in items]
    if depth < 3 and isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ in app code must not break the probe
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= 300 else text[:297] + "..."


def _emit(event, **fields):
    """Append one event line, written with a single os.write so a crash keeps what came before.

    In-process (:func:`install_in_process`) the event dict goes to the sink instead; a forked
    child's events are dropped there, since its memory is not the auditing process's.
    """
    sink = _S.sink
    fd = _S.fd
    if sink is None and fd is None:
        return
    record = {"event": event, "t": round(perf_counter() - _T0, 6)}
    record.update(fields)
    child = _in_forked_child()
    if sink is not None:
        if not child:
            try:
                sink(record)
            except Exception:
                pass
        return
    if child:
        record["pid"] = _real_getpid()
        record["forked_child"] = True
    try:
        try:
            # json.dumps without arguments reuses one cached encoder: this is the hot path (one
            # call per import), several times cheaper than building an encoder per call.
            text = json.dumps(record)
        except (TypeError, ValueError):
            text = json.dumps(record, default=_jsonable)
        data = (text + "\n").encode("utf-8", "replace")
    except Exception as exc:  # never let an odd value lose the event entirely
        fallback = {"event": event, "t": record["t"], "unencodable": repr(exc)}
        data = (json.dumps(fallback) + "\n").encode("utf-8", "replace")
    # A forked child is single-threaded, and the lock may have been copied in the locked state.
    # The timeout covers the SIGTERM handler interrupting an _emit in the same thread.
    locked = False if child else _S.lock.acquire(True, 1.0)
    try:
        while data:
            written = _real_write(fd, data)
            data = data[written:]
    except OSError:
        _S.fd = None  # closed underneath us (daemonizers close fds): stop writing
    finally:
        if locked:
            _S.lock.release()


# ---------------------------------------------------------------------------------------------
# Frame helpers
# ---------------------------------------------------------------------------------------------


def _source_line(filename, lineno):
    try:
        line = linecache.getline(filename, lineno).strip()
    except Exception:
        return None
    return line or None


def _frame_dict(frame, lineno=None):
    code = frame.f_code
    line = frame.f_lineno if lineno is None else lineno
    return {
        "file": code.co_filename,
        "line": line,
        "function": code.co_name,
        "code": _source_line(code.co_filename, line),
    }


def _stack(frame, limit=60):
    """Frames from ``frame`` outwards, returned outermost first (innermost last)."""
    out = []
    while frame is not None and len(out) < limit:
        out.append(_frame_dict(frame))
        frame = frame.f_back
    out.reverse()
    return out


def _is_probe_or_importlib(filename):
    return (
        filename in _PROBE_FILES
        or filename.startswith("<frozen ")
        or filename.startswith(_IMPORTLIB_DIR)
    )


def _traceback_frames(tb):
    """Structured traceback, innermost last, without the probe's and importlib's frames.

    If only importlib frames are left (the error came from the import machinery itself, e.g.
    a module lock broken by patching mid-import), those are kept rather than returning nothing.
    """
    out = []
    machinery = []
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not _is_probe_or_importlib(filename):
            out.append(_frame_dict(tb.tb_frame, tb.tb_lineno))
        elif filename not in _PROBE_FILES:
            machinery.append(_frame_dict(tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return (out or machinery)[-60:]


def _module_name_of(frame):
    g = frame.f_globals
    name = g.get("__name__")
    if isinstance(name, str):
        return name
    spec = g.get("__spec__")
    return getattr(spec, "name", None)


def _is_machinery(frame):
    name = _module_name_of(frame) or ""
    for prefix in _MACHINERY_PREFIXES:
        if name == prefix or name.startswith(prefix + "."):
            return True
    return frame.f_code.co_filename in _PROBE_FILES


def _caller_frame(frame):
    """First frame outward that is not gevent/eventlet/zope/greenlet/the probe (or None)."""
    while frame is not None and _is_machinery(frame):
        frame = frame.f_back
    return frame


def _app_frame(frame):
    """Innermost frame under an app root; else the first one outside probe, gevent and stdlib."""
    fallback = None
    f = frame
    while f is not None:
        filename = f.f_code.co_filename
        for root in _S.app_roots:
            if filename.startswith(root):
                return f
        if (
            fallback is None
            and not _is_machinery(f)
            and not _is_probe_or_importlib(filename)
            and not filename.startswith(_STDLIB_DIR)
        ):
            fallback = f
        f = f.f_back
    return fallback


def _where(frame):
    if frame is None:
        return None, None
    return frame.f_code.co_filename, frame.f_lineno


def _qualified_type(exc):
    tp = type(exc)
    module = getattr(tp, "__module__", "builtins")
    if module == "builtins":
        return tp.__qualname__
    return module + "." + tp.__qualname__


# ---------------------------------------------------------------------------------------------
# Import recorder: a sys.meta_path[0] finder that notes first imports and installs post-import
# hooks. It asks the remaining finders itself and returns their spec, which is what importlib
# would have used anyway, so the origin is known without searching twice.
# ---------------------------------------------------------------------------------------------


class _ImportRecorder:
    def __init__(self):
        self.found = set()
        self.missing = set()
        self.busy = set()  # thread idents inside find_spec (imports made by other finders)

    def find_spec(self, name, path=None, target=None):
        if name in sys.modules:
            return None
        ident = _real_get_ident()
        if ident in self.busy:
            return None
        self.busy.add(ident)
        try:
            return self._find(name, path, target)
        finally:
            self.busy.discard(ident)

    def _find(self, name, path, target):
        (importer, line), lookup_only = _importer_of(sys._getframe(2))
        spec = None
        complete = True
        seen_self = False
        for finder in list(sys.meta_path):
            if not seen_self:
                seen_self = finder is self
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:  # a legacy finder: let importlib run the rest itself
                complete = False
                break
            spec = find(name, path, target)
            if spec is not None:
                break
        if lookup_only:
            return spec if complete else None
        if spec is not None:
            if name not in self.found:
                self.found.add(name)
                origin = spec.origin if getattr(spec, "has_location", False) else None
                self._record(name, importer, line, origin, True)
            if name in _POST_IMPORT_HOOKS:
                _install_post_import_hook(name, spec)
        elif name not in self.missing and name not in self.found:
            self.missing.add(name)
            self._record(name, importer, line, None, False if complete else None)
        return spec if complete else None

    def _record(self, name, importer, line, origin, found):
        try:
            _S.importers.setdefault(name, importer)
            if origin:
                _S.import_files.setdefault(origin, name)
            _emit(
                "import",
                module=name,
                importer=importer,
                line=line,  # the importer's line executing when the import started
                file=origin,
                phase="post-patch" if _S.patched else "pre-patch",
                found=found,
            )
        except Exception:
            pass


def _importer_of(frame):
    """(importer module name, is_lookup_only) for an import whose machinery starts at frame."""
    lookup_only = False
    f = frame
    while f is not None:
        code = f.f_code
        filename = code.co_filename
        if _is_probe_or_importlib(filename):
            if filename == _IMPORTLIB_UTIL and code.co_name == "find_spec":
                lookup_only = True
            f = f.f_back
            continue
        return (_module_name_of(f) or "<unknown>", f.f_lineno), lookup_only
    return ("<target>" if _S.importing_target else "<probe>", None), lookup_only


def _install_post_import_hook(name, spec):
    """Run the hook for ``name`` right after its module body executes."""
    loader = spec.loader
    if loader is None or isinstance(loader, type) or not hasattr(loader, "exec_module"):
        return  # class-level loaders are shared; _apply_loaded_hooks() catches these later
    real_exec = loader.exec_module

    def exec_module(module):
        try:
            del loader.exec_module  # one-shot: the loader object may be shared (zipimport)
        except AttributeError:
            pass
        real_exec(module)
        if getattr(module, "__name__", None) == name:
            _run_hook(name, module)

    try:
        loader.exec_module = exec_module
    except (AttributeError, TypeError):
        pass


def _run_hook(name, module):
    if name in _S.hooked:
        return
    _S.hooked.add(name)
    try:
        _POST_IMPORT_HOOKS[name](module)
    except Exception as exc:
        _emit_error(exc, "startup")


def _apply_loaded_hooks():
    """Hook modules that were loaded without our loader wrapper (already imported, zip, ...)."""
    for name in _POST_IMPORT_HOOKS:
        module = sys.modules.get(name)
        if module is not None and name not in _S.hooked:
            _run_hook(name, module)


# ---------------------------------------------------------------------------------------------
# Patch hooks: gevent.monkey functions, eventlet.monkey_patch, zope.event subscriber
# ---------------------------------------------------------------------------------------------


def _threads_now():
    threading = sys.modules.get("threading")
    if threading is None:
        return ["MainThread"]
    try:
        return [t.name for t in threading.enumerate()]
    except Exception:
        return None


def _patch_context(framework, function, args, kwargs, via="wrapper"):
    """Fields known before the real patch call runs (and the phase flips to post-patch)."""
    frame = _caller_frame(sys._getframe(2))
    if _S.probe_patch_label is not None:
        file, line = _S.probe_patch_label, None
    else:
        file, line = _where(frame)
    fields = {
        "framework": framework,
        "function": function,
        "args": args,
        "kwargs": _jsonable(kwargs),
        "file": file,
        "line": line,
        "main_thread": _real_get_ident() == _MAIN_IDENT,
        "threads": _threads_now(),
        "via": via,
    }
    if not _S.first_patch_seen:
        _S.first_patch_seen = True
        fields["modules_before"] = sorted(sys.modules)
    _S.patched = True
    return fields


def _warning_dicts(caught, fields, category=None):
    out = []
    for w in caught:
        if category is not None and not issubclass(w.category, category):
            continue
        file, line = w.filename, w.lineno
        if file in _PROBE_FILES:
            # gevent warns with stacklevel=3, which lands on our wrapper: point at the caller.
            file, line = fields["file"], fields["line"]
        out.append(
            {"category": w.category.__name__, "message": str(w.message), "file": file, "line": line}
        )
    return out


def _reemit(caught, category, fields=None):
    """Warnings that are not gevent's go on as if the probe were not there.

    In-process every warning goes on (the user's filters, e.g. ``-W error``, still apply),
    pointed at the patch call rather than at this wrapper.
    """
    for w in caught:
        if category is None or not issubclass(w.category, category) or _S.sink is not None:
            file, line = w.filename, w.lineno
            if fields is not None and file in _PROBE_FILES and fields.get("file"):
                file, line = fields["file"], fields.get("line") or 0
            if _S.sink is not None:  # `-W error` raises at the patch call, as without us
                warnings.warn_explicit(w.message, w.category, file, line)
                continue
            try:
                warnings.warn_explicit(w.message, w.category, file, line)
            except Exception:
                pass


def _wrap_gevent_patch(name, func, monkey):
    def wrapper(*args, **kwargs):
        if _S.patch_depth or _in_forked_child():
            return func(*args, **kwargs)
        fields = _patch_context("gevent", name, len(args), kwargs)
        category = getattr(monkey, "MonkeyPatchWarning", None)
        _S.patch_depth += 1
        raised = None
        result = None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = func(*args, **kwargs)
                except BaseException as exc:
                    raised = f"{type(exc).__name__}: {exc}"
                    raise
                finally:
                    fields["returned"] = _jsonable(result)
                    fields["raised"] = raised
                    fields["warnings"] = _warning_dicts(caught, fields, category)
                    _emit("patch", **fields)
                    _maybe_emit_settings()
            _reemit(caught, category, fields)
            return result
        finally:
            _S.patch_depth -= 1

    wrapper.__wrapped__ = func
    wrapper.__name__ = getattr(func, "__name__", name)
    wrapper.__qualname__ = getattr(func, "__qualname__", name)
    wrapper.__doc__ = getattr(func, "__doc__", None)
    wrapper.__module__ = getattr(func, "__module__", "gevent.monkey")
    wrapper._patchaudit_wrapper = True
    return wrapper


def _hook_gevent_monkey(monkey):
    # Replace the module globals right after gevent.monkey executes, so that both
    # ``gevent.monkey.patch_all()`` and ``from gevent.monkey import patch_all`` get the wrapper,
    # and patch_all's own calls to patch_os() etc. (global look-ups) hit a nested wrapper.
    for name, func in list(vars(monkey).items()):
        if not name.startswith("patch_") or not callable(func) or isinstance(func, type):
            continue
        if getattr(func, "_patchaudit_wrapper", False):
            continue
        setattr(monkey, name, _wrap_gevent_patch(name, func, monkey))


def _wrap_eventlet_monkey_patch(func, patcher):
    def monkey_patch(*args, **kwargs):
        if _S.patch_depth or _in_forked_child():
            return func(*args, **kwargs)
        fields = _patch_context("eventlet", "monkey_patch", len(args), kwargs)
        _S.patch_depth += 1
        raised = None
        result = None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = func(*args, **kwargs)
                except BaseException as exc:
                    raised = f"{type(exc).__name__}: {exc}"
                    raise
                finally:
                    fields["returned"] = _jsonable(result)
                    fields["raised"] = raised
                    fields["warnings"] = _warning_dicts(caught, fields)
                    fields["already_patched"] = _jsonable(
                        dict(getattr(patcher, "already_patched", {}) or {})
                    )
                    _emit("patch", **fields)
            return result
        finally:
            _S.patch_depth -= 1

    monkey_patch.__wrapped__ = func
    monkey_patch.__name__ = "monkey_patch"
    monkey_patch.__doc__ = getattr(func, "__doc__", None)
    monkey_patch.__module__ = getattr(func, "__module__", "eventlet.patcher")
    monkey_patch._patchaudit_wrapper = True
    return monkey_patch


def _hook_eventlet_patcher(patcher):
    func = getattr(patcher, "monkey_patch", None)
    if func is not None and not getattr(func, "_patchaudit_wrapper", False):
        patcher.monkey_patch = _wrap_eventlet_monkey_patch(func, patcher)


def _hook_eventlet(eventlet):
    # ``eventlet/__init__`` binds ``monkey_patch = patcher.monkey_patch`` after importing the
    # (already hooked) patcher; this only matters if the patcher hook could not be installed.
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None:
        _hook_eventlet_patcher(patcher)
        func = getattr(eventlet, "monkey_patch", None)
        if func is not None and not getattr(func, "_patchaudit_wrapper", False):
            eventlet.monkey_patch = patcher.monkey_patch


def _hook_zope_event(zope_event):
    subscribers = getattr(zope_event, "subscribers", None)
    if isinstance(subscribers, list) and _on_zope_event not in subscribers:
        subscribers.append(_on_zope_event)


def _hook_daemon(module):
    cls = getattr(module, "DaemonContext", None)
    open_ = getattr(cls, "open", None) if cls is not None else None
    if open_ is None or getattr(open_, "_patchaudit_wrapper", False):
        return

    def open_wrapper(self, *args, **kwargs):
        _record_fork("daemon.DaemonContext.open", sys._getframe(1))
        return open_(self, *args, **kwargs)

    open_wrapper._patchaudit_wrapper = True
    open_wrapper.__wrapped__ = open_
    cls.open = open_wrapper


_POST_IMPORT_HOOKS = {
    "gevent.monkey": _hook_gevent_monkey,
    "eventlet.patcher": _hook_eventlet_patcher,
    "eventlet": _hook_eventlet,
    "zope.event": _hook_zope_event,
    "daemon.daemon": _hook_daemon,
    "daemon": _hook_daemon,
}


def _on_zope_event(event):
    """zope.event subscriber: a patch_all that bypassed our wrapper, and blocking reports."""
    tp = type(event)
    if getattr(tp, "__module__", "") != "gevent.events":
        return
    try:
        if tp.__name__ == "EventLoopBlocked":
            _record_block(event)
        elif tp.__name__ == "GeventWillPatchAllEvent" and not _S.patch_depth:
            if _in_forked_child():
                return
            settings = getattr(event, "patch_all_arguments", None)
            fields = _patch_context(
                "gevent", "patch_all", None, settings, "GeventWillPatchAllEvent"
            )
            fields.update(returned=None, raised=None, warnings=[])
            _emit("patch", **fields)
            # Until GeventDidPatchAllEvent, the patch_os() etc. it calls are nested calls.
            _S.patch_depth += 1
            _S.event_patch_open = True
        elif tp.__name__ == "GeventDidPatchAllEvent" and _S.event_patch_open:
            _close_event_patch()
            _maybe_emit_settings()
    except Exception:
        pass  # an exception here would cancel or break the app's patching


def _close_event_patch():
    """End an event-only patch_all (also at step boundaries, in case it never finished)."""
    if _S.event_patch_open:
        _S.event_patch_open = False
        _S.patch_depth -= 1


def _maybe_emit_settings():
    if _S.settings_emitted:
        return
    monkey = sys.modules.get("gevent.monkey")
    saved = getattr(monkey, "saved", None)
    if not saved:
        return
    _S.settings_emitted = True
    names = {}
    for mod, items in saved.items():
        if str(mod).startswith(_BOOKKEEPING_PREFIX) or not isinstance(items, dict):
            continue
        names[mod] = sorted(items)
    _emit("settings", settings=_jsonable(saved.get(_SETTINGS_KEY)), saved=names)


# ---------------------------------------------------------------------------------------------
# Blocking reports (called in gevent's monitor thread)
# ---------------------------------------------------------------------------------------------


# Steps in which only the probe's own code runs (the stale scan is seconds of CPU on a big app):
# the monitor would blame the probe, so reports landing there are dropped.
_PROBE_STEPS = frozenset(["startup", "patch", "owners", "stale", "libraries"])


def _record_block(event):
    if _S.step in _PROBE_STEPS or (_S.step == "serve" and _S.serve_path is None):
        return  # serve without a path: the probe importing pywsgi / starting the server
    stack = None
    source = "frames"
    hub = getattr(event, "hub", None)
    ident = getattr(hub, "thread_ident", None) or _MAIN_IDENT
    try:
        frame = sys._current_frames().get(ident)
        if frame is not None:
            stack = _stack(frame)
    except Exception:
        stack = None
    if not stack:
        source = "report"
        stack = _stack_from_report(getattr(event, "info", None) or [])
    _emit(
        "block",
        blocking_time=_jsonable(getattr(event, "blocking_time", None)),
        phase=_S.step,
        path=_S.serve_path,
        greenlet=_jsonable(getattr(event, "greenlet", None)),
        stack=stack,
        stack_source=source,
    )


def _stack_from_report(report):
    """Parse the 'Blocked Stack' part of gevent's text report (traceback.format_stack text)."""
    import re  # already imported at interpreter start-up

    text = "\n".join(str(part) for part in report)
    start = text.find("Blocked Stack")
    end = text.find("\nInfo:", start)
    if start < 0:
        return []
    body = text[start : end if end > 0 else len(text)]
    frames = []
    for m in re.finditer(r'File "([^"]+)", line (\d+), in (\S+)\n(?:\s+(\S.*))?', body):
        frames.append(
            {
                "file": m.group(1),
                "line": int(m.group(2)),
                "function": m.group(3),
                "code": (m.group(4) or "").strip() or None,
            }
        )
    return frames


# ---------------------------------------------------------------------------------------------
# Fork / daemonize / exit containment
# ---------------------------------------------------------------------------------------------


# Modules whose forks are fork+exec of a subprocess, not the app forking itself: stdlib
# subprocess forks in C (invisible here), gevent's subprocess does the same in Python.
_SUBPROCESS_FORKERS = frozenset(["gevent.subprocess"])


def _fork_via(frame):
    """Module that asked for the fork: the first frame outside the probe and gevent.os."""
    while frame is not None:
        name = _module_name_of(frame)
        if frame.f_code.co_filename not in _PROBE_FILES and name != "gevent.os":
            return name
        frame = frame.f_back
    return None


def _record_fork(what, frame, contained=False):
    via = _fork_via(frame)
    if via in _SUBPROCESS_FORKERS:
        return
    file, line = _where(_app_frame(frame))
    _emit(
        "fork",
        what=what,
        file=file,
        line=line,
        via=via,
        after_patch=_S.patched,
        phase=_S.step,
        contained=contained,
    )


def _contained_detach(what, real):
    """Wrap a call that leaves the process group: recorded always, refused in forked children."""

    def detach(*args):
        child = _in_forked_child()
        _record_fork(what, sys._getframe(1), contained=child)
        if child:
            return None
        return real(*args)

    return detach


def _install_process_wrappers():
    """Wrap os functions before the app runs (gevent.os later captures these as the raw ones)."""
    real_fork = getattr(os, "fork", None)
    real_forkpty = getattr(os, "forkpty", None)
    real_setsid = getattr(os, "setsid", None)
    real_setpgrp = getattr(os, "setpgrp", None)
    real_setpgid = getattr(os, "setpgid", None)
    real_closerange = getattr(os, "closerange", None)

    if real_fork is not None:

        def fork():
            _record_fork("os.fork", sys._getframe(1))
            return real_fork()

        os.fork = fork

    if real_forkpty is not None:

        def forkpty():
            _record_fork("os.forkpty", sys._getframe(1))
            return real_forkpty()

        os.forkpty = forkpty

    # A forked child that detaches would escape the launcher's killpg: keep it in the group.
    for name, real in (
        ("setsid", real_setsid),
        ("setpgrp", real_setpgrp),
        ("setpgid", real_setpgid),
    ):
        if real is not None:
            setattr(os, name, _contained_detach("os." + name, real))

    if real_closerange is not None:

        def closerange(fd_low, fd_high):
            _record_fork("os.closerange", sys._getframe(1))
            keep = _S.fd
            # Keep the events file open so later facts (and a child's setsid) are still seen.
            if keep is not None and fd_low <= keep < fd_high:
                real_closerange(fd_low, keep)
                return real_closerange(keep + 1, fd_high)
            return real_closerange(fd_low, fd_high)

        os.closerange = closerange

    def _exit(code):
        if not _in_forked_child():
            try:
                file, line = _where(_app_frame(sys._getframe(1)))
                _emit("exit", code=_jsonable(code), file=file, line=line, phase=_S.step)
                _emit("done", status="error", errors=_S.errors, reason="os._exit")
            except Exception:
                pass
        _real_exit(code)

    os._exit = _exit


def _main_greenlet_stack():
    """Stack of the main greenlet when it is switched out (the signal landed in the hub)."""
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return None
    current = greenlet.getcurrent()
    root = current
    while getattr(root, "parent", None) is not None:
        root = root.parent  # the hub's parent is the main greenlet
    if root is current:
        return None
    frame = getattr(root, "gr_frame", None)
    return _stack(frame) if frame is not None else None


def _on_sigterm(signum, frame):
    if _in_forked_child():
        _real_exit(128 + signum)
    try:
        try:
            greenlet_stack = _main_greenlet_stack()
        except Exception:
            greenlet_stack = None
        _emit(
            "terminated",
            signal=signum,
            phase=_S.step,
            serve_path=_S.serve_path,
            stack=_stack(frame),
            main_greenlet_stack=greenlet_stack,
        )
        _emit("done", status="error", errors=_S.errors, reason="SIGTERM")
    finally:
        # Die by the signal itself so the launcher sees "killed by SIGTERM", not an exit code.
        _signal.signal(signum, _signal.SIG_DFL)
        os.kill(_real_getpid(), signum)
        _real_exit(128 + signum)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def _import_chain(failing):
    """Module names from the first one the target import triggered down to ``failing``."""
    chain = []
    name = failing
    while isinstance(name, str) and not name.startswith("<") and name not in chain:
        chain.append(name)
        name = _S.importers.get(name)
    chain.reverse()
    return chain


def _failing_module(exc):
    """The module whose import failed: innermost module-level frame, plus a missing module."""
    failing = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "<module>" and not _is_probe_or_importlib(
            frame.f_code.co_filename
        ):
            failing = _module_name_of(frame)
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        broken = _S.import_files.get(getattr(exc, "filename", None) or "")
        if broken:
            return broken
    if isinstance(exc, ImportError):
        missing = getattr(exc, "name", None)
        if missing and missing not in sys.modules and missing in _S.importers:
            return missing
    return failing


def _emit_error(exc, phase):
    if _in_forked_child():
        if _S.sink is not None:
            return  # in-process: a fork of the test process is not ours to end
        _real_exit(0)
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
        "type": _qualified_type(exc),
        "message": str(exc),
        "traceback": _traceback_frames(exc.__traceback__),
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
        fields["code"] = _jsonable(exc.code)
    elif kind == "syntax-error":
        fields["file"] = getattr(exc, "filename", None)
        fields["line"] = getattr(exc, "lineno", None)
    elif kind == "import-error":
        fields["name"] = getattr(exc, "name", None)
    _S.errors += 1
    _emit("error", **fields)


def _guarded(step, func, *args):
    """Run one probe step; (True, result) or (False, None) after writing an error event."""
    _close_event_patch()
    _S.step = step
    try:
        result = func(*args)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from app code included
        _leave_if_forked_child()
        _emit_error(exc, step)
        return False, None
    _leave_if_forked_child()
    return True, result


# ---------------------------------------------------------------------------------------------
# Target import and WSGI callable resolution
# ---------------------------------------------------------------------------------------------


def _import_target():
    target = _S.spec.get("target") or {}
    kind = target.get("kind", "module")
    _S.importing_target = True
    try:
        if kind == "file":
            path = target.get("file")
            name = target.get("module") or os.path.splitext(os.path.basename(path))[0]
            _S.importers.setdefault(name, "<target>")
            _S.import_files.setdefault(path, name)
            _emit(
                "import",
                module=name,
                importer="<target>",
                line=None,
                file=path,
                phase="post-patch" if _S.patched else "pre-patch",
                found=os.path.exists(path),
            )
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path} as a Python module", name=name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(target["module"])
    finally:
        _S.importing_target = False
    _S.target_module = module
    _apply_loaded_hooks()
    _maybe_emit_settings()
    return module


def _resolve_callable(module):
    """Find the WSGI callable as the server would; emits the ``target`` event."""
    target = _S.spec.get("target") or {}
    name = target.get("callable")
    factory = bool(target.get("factory"))
    if isinstance(name, str) and name.endswith("()"):
        name, factory = name[:-2], True
    fields = {
        "module": getattr(module, "__name__", None),
        "file": getattr(module, "__file__", None),
        "callable": name,
        "wsgi": False,
        "reason": None,
        "factory_called": False,
    }
    obj = None
    if name:
        obj = module
        for part in name.split("."):
            if not hasattr(obj, part):
                fields["reason"] = f"no `{name}` attribute in {fields['module']}"
                obj = None
                break
            obj = getattr(obj, part)
    else:
        for candidate in ("application", "app"):
            if hasattr(module, candidate):
                name = candidate
                obj = getattr(module, candidate)
                break
        fields["callable"] = name
        if obj is None:
            fields["reason"] = "no `application` or `app` attribute"
    if obj is not None and factory:
        fields["factory_called"] = True
        try:
            obj = obj()
        except BaseException as exc:
            _leave_if_forked_child()
            fields["reason"] = f"factory `{name}()` raised {type(exc).__name__}: {exc}"
            _emit("target", **fields)
            raise
        _leave_if_forked_child()
    if obj is not None:
        if callable(obj):
            fields["wsgi"] = True
        else:
            fields["reason"] = f"`{name}` is not callable ({type(obj).__name__})"
            obj = None
    _emit("target", **fields)
    _apply_loaded_hooks()
    return obj


def _probe_patch_all():
    """Patch the way the mode's server does, marked as the probe's doing."""
    import gevent.monkey

    _apply_loaded_hooks()
    _S.probe_patch_label = f"<patchaudit:{_S.mode}>"
    try:
        gevent.monkey.patch_all()
    finally:
        _S.probe_patch_label = None
    _maybe_emit_settings()


# ---------------------------------------------------------------------------------------------
# Post-patch facts: owners and the stale-reference scan
# ---------------------------------------------------------------------------------------------


def _owners():
    owners = {}
    for dotted in _OWNER_NAMES:
        mod_name, _, attr = dotted.partition(".")
        module = sys.modules.get(mod_name)
        obj = getattr(module, attr, None) if module is not None else None
        owners[dotted] = getattr(obj, "__module__", None) if obj is not None else None
    _emit("owners", owners=owners)


def _skipped_holder_module(name):
    if not isinstance(name, str) or name == "__main__":  # __main__ is the probe itself
        return True
    for prefix in _MACHINERY_PREFIXES:
        if name == prefix or name.startswith(prefix + "."):
            return True
    # The C modules that *implement* the originals (posix.waitpid, _socket.socket,
    # _thread.RLock, ...) hold them by definition; nothing calls through them by accident.
    if name in sys.builtin_module_names:
        return True
    file = _module_file(name)
    return bool(file and file.startswith(_STDLIB_DIR) and not file.endswith(".py"))


def _module_file(name):
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    return file if isinstance(file, str) else None


def _stale_scan():
    scanned = stale_references()
    if scanned is None:
        return
    found, originals = scanned
    for fields in found:
        _emit("stale", **fields)
    _emit("stale_scan", originals=originals, holders=len(found))


def stale_references():
    """``(holders, number of originals scanned)``, or None when gevent never patched.

    Each holder is a dict with the fields of the ``stale`` event. Public for in-process use.
    """
    monkey = sys.modules.get("gevent.monkey")
    saved = getattr(monkey, "saved", None)
    if not saved:
        return None
    # id(original) -> [original, "module.attr" it was saved as, {modules it was saved from}]
    originals = {}
    for mod_name, items in list(saved.items()):
        if str(mod_name).startswith(_BOOKKEEPING_PREFIX) or not isinstance(items, dict):
            continue
        for attr, orig in list(items.items()):
            if not callable(orig):  # classes are callable too
                continue
            entry = originals.setdefault(id(orig), [orig, f"{mod_name}.{attr}", set()])
            entry[2].add(mod_name)
    if not originals:
        return None

    module_dicts = {}
    for name, module in list(sys.modules.items()):
        d = getattr(module, "__dict__", None)
        if isinstance(d, dict) and (
            id(d) not in module_dicts or name == getattr(module, "__name__", None)
        ):
            module_dicts[id(d)] = name

    found = []
    seen = set()

    def add(holder, kind, holder_module, name, entry):
        if holder_module in entry[2] or _skipped_holder_module(holder_module):
            return
        key = (holder, name, entry[1])
        if key in seen:
            return
        seen.add(key)
        found.append(
            {
                "holder": holder,
                "holder_kind": kind,
                "holder_module": holder_module,
                "holder_file": _module_file(holder_module),
                "name": name,
                "original": entry[1],
            }
        )

    # One heap walk for all originals, then one for the dicts that might be class dicts.
    objects = [entry[0] for entry in originals.values()]
    referrers = gc.get_referrers(*objects)
    candidate_dicts = []
    for ref in referrers:
        if not isinstance(ref, dict) or ref is originals:
            continue
        holder_module = module_dicts.get(id(ref))
        names = [(k, v) for k, v in list(ref.items()) if id(v) in originals]
        if holder_module is not None:
            for key, value in names:
                if originals[id(value)][0] is value:
                    add(holder_module, "module", holder_module, key, originals[id(value)])
        elif names:
            candidate_dicts.append((ref, names))
    if candidate_dicts:
        by_id = {id(d): names for d, names in candidate_dicts}
        for owner in gc.get_referrers(*[d for d, _ in candidate_dicts]):
            if not isinstance(owner, type):
                continue
            # A class's __dict__ is a mappingproxy; its one referent is the real dict.
            for inner in gc.get_referents(owner.__dict__):
                names = by_id.get(id(inner))
                if not names:
                    continue
                holder_module = getattr(owner, "__module__", None)
                holder = f"{holder_module}.{owner.__qualname__}"
                for key, value in names:
                    if originals[id(value)][0] is value:
                        add(holder, "class", holder_module, key, originals[id(value)])
    del referrers, candidate_dicts

    for entry in originals.values():
        orig = entry[0]
        if not isinstance(orig, type):
            continue
        stack = [(sub, "__bases__") for sub in _subclasses(orig)]
        visited = set()
        while stack:
            sub, how = stack.pop()
            if id(sub) in visited:
                continue
            visited.add(id(sub))
            holder_module = getattr(sub, "__module__", None)
            add(f"{holder_module}.{sub.__qualname__}", "subclass", holder_module, how, entry)
            stack.extend((s, "__mro__") for s in _subclasses(sub))
    return found, len(originals)


def _subclasses(cls):
    try:
        return list(type.__subclasses__(cls))
    except TypeError:
        return []


# ---------------------------------------------------------------------------------------------
# Serving: gevent.pywsgi in this process, clients on real native threads
# ---------------------------------------------------------------------------------------------


class _ErrorLog:
    """File-like error_log for pywsgi: keeps the first lines it is given."""

    def __init__(self):
        self.lines = []

    def write(self, data):
        for line in str(data).splitlines():
            if line.strip() and len(self.lines) < 20:
                self.lines.append(line[:300])

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass


def _wrap_wsgi(app):
    reported = set()

    def report(exc):
        key = (_S.serve_path, type(exc).__name__, str(exc))
        if key in reported:
            return
        reported.add(key)
        _emit(
            "request_error",
            path=_S.serve_path,
            type=_qualified_type(exc),
            message=str(exc),
            traceback=_traceback_frames(exc.__traceback__),
        )

    class _Body:
        def __init__(self, iterable):
            self.iterable = iterable
            self.iterator = None

        def __iter__(self):
            self.iterator = iter(self.iterable)
            return self

        def __next__(self):
            try:
                return next(self.iterator)
            except StopIteration:
                raise
            except Exception as exc:
                report(exc)
                raise

        def close(self):
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()

    def wrapped(environ, start_response):
        try:
            return _Body(app(environ, start_response))
        except Exception as exc:
            report(exc)
            raise

    return wrapped


def _one_request(raw_socket, port, path, timeout):
    """(latency, status, error) for one GET on a native-blocking original socket."""
    start = perf_counter()
    status = None
    error = None
    sock = raw_socket()  # AF_INET, SOCK_STREAM
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        head = b"".join(chunks)[:200].split(b"\r\n", 1)[0].split()
        if len(head) >= 2 and head[1].isdigit():
            status = int(head[1])
        else:
            error = f"malformed response: {b''.join(chunks)[:80]!r}"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            sock.close()
        except Exception:
            pass
    latency = perf_counter() - start
    return (None if error else round(latency, 6)), status, error


def _run_batch(port, path, count, concurrency, timeout):
    """Send ``count`` requests from ``concurrency`` native threads; keep the hub running."""
    import gevent
    from gevent.monkey import get_original

    start_new_thread = get_original("_thread", "start_new_thread")
    allocate_lock = get_original("_thread", "allocate_lock")
    raw_socket = get_original("socket", "socket")

    results = [None] * count
    state = {"next": 0, "finished": 0}
    lock = allocate_lock()
    workers = max(1, min(concurrency, count))

    def worker():
        try:
            while True:
                with lock:
                    index = state["next"]
                    if index >= count:
                        break
                    state["next"] = index + 1
                results[index] = _one_request(raw_socket, port, path, timeout)
        finally:
            with lock:
                state["finished"] += 1

    started = perf_counter()
    for _ in range(workers):
        start_new_thread(worker, ())
    rounds = (count + workers - 1) // workers
    deadline = started + timeout * (rounds + 1) + 5
    # The main greenlet must keep yielding so the hub can accept and serve.
    while state["finished"] < workers and perf_counter() < deadline:
        gevent.sleep(0.005)
        _leave_if_forked_child()
    wall = perf_counter() - started
    for i, result in enumerate(results):
        if result is None:
            results[i] = (None, None, "not finished before the probe's deadline")
    return wall, results


def _serve(app):
    serve = _S.spec.get("serve") or {}
    paths = serve.get("paths") or []
    if not paths:
        return
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and getattr(patcher, "already_patched", None):
        _emit(
            "serve",
            skipped="eventlet has monkey-patched this process; serving with gevent.pywsgi would "
            "mix the two hubs",
        )
        return
    import gevent.pywsgi

    count = int(serve.get("requests", 20))
    concurrency = int(serve.get("concurrency", 10))
    timeout = float(serve.get("request_timeout", 10))
    error_log = _ErrorLog()
    server = gevent.pywsgi.WSGIServer(
        ("127.0.0.1", 0), _wrap_wsgi(app), log=None, error_log=error_log
    )
    server.start()  # binds and accepts in the hub; serve_forever() would only add a wait
    try:
        port = server.server_port
        for path in paths:
            _S.serve_path = path
            _, single = _run_batch(port, path, 1, 1, timeout)
            wall, results = _run_batch(port, path, count, concurrency, timeout)
            statuses = {}
            for _latency, status, _error in results:
                key = "none" if status is None else str(status)
                statuses[key] = statuses.get(key, 0) + 1
            _emit(
                "serve",
                port=port,
                path=path,
                single=single[0][0],
                single_status=single[0][1],
                single_error=single[0][2],
                requests=count,
                concurrency=concurrency,
                wall=round(wall, 6),
                latencies=[r[0] for r in results],
                statuses=statuses,
                errors=[r[2] for r in results if r[2]],
                server_errors=list(error_log.lines),
            )
            del error_log.lines[:]
    finally:
        _S.serve_path = None
        try:
            server.stop(timeout=1)
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# Library checks (only libraries the app loaded; nothing is imported for them)
# ---------------------------------------------------------------------------------------------


def _gevent_patched_socket():
    monkey = sys.modules.get("gevent.monkey")
    saved = getattr(monkey, "saved", None) or {}
    return "socket" in saved


def _applies(ok):
    return ok if _gevent_patched_socket() else None


def _check_psycopg2(module):
    extensions = sys.modules.get("psycopg2.extensions")
    get_cb = getattr(extensions, "get_wait_callback", None)
    if get_cb is None:
        return "wait-callback", None, "psycopg2.extensions.get_wait_callback is not available"
    callback = get_cb()
    detail = (
        "no wait callback: queries block the hub (use psycogreen.gevent.patch_psycopg())"
        if callback is None
        else f"wait callback {_jsonable(callback)}"
    )
    return "wait-callback", _applies(callback is not None), detail


def _check_grpc(module):
    cygrpc = sys.modules.get("grpc._cython.cygrpc")
    if cygrpc is None:
        return "gevent-mode", None, "grpc._cython.cygrpc is not loaded"
    # The attribute names come from grpc's source (grpc_gevent.pyx.pxi): current releases set
    # the module global ``g_gevent_activated = True`` in init_grpc_gevent(); older releases
    # (custom iomgr) set ``gevent_g = gevent`` there instead.
    if hasattr(cygrpc, "g_gevent_activated"):
        active = bool(cygrpc.g_gevent_activated)
        attr = "g_gevent_activated"
    elif hasattr(cygrpc, "gevent_g"):
        active = cygrpc.gevent_g is not None
        attr = "gevent_g"
    else:
        return "gevent-mode", None, "cygrpc has neither g_gevent_activated nor gevent_g"
    state = "on" if active else "off: call grpc.experimental.gevent.init_gevent() after patching"
    detail = f"cygrpc.{attr} says gevent mode is {state} (attribute name read from grpc's source)"
    return "gevent-mode", _applies(active), detail


def _check_zmq(module):
    socket_cls = getattr(module, "Socket", None)
    if not isinstance(socket_cls, type):
        return "green-sockets", None, "zmq.Socket is not available"
    green_core = sys.modules.get("zmq.green.core")
    green_cls = getattr(green_core, "_Socket", None)
    bad = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, socket_cls) and not (
                green_cls is not None and isinstance(obj, green_cls)
            ):
                bad.append(type(obj).__module__ + "." + type(obj).__qualname__)
        except Exception:
            continue
    if not bad:
        return "green-sockets", _applies(True), "no non-green zmq sockets alive"
    kinds = ", ".join(sorted(set(bad)))
    detail = f"{len(bad)} zmq socket(s) not from zmq.green: {kinds}"
    return "green-sockets", _applies(False), detail


def _check_cassandra(module):
    conn = getattr(module, "DefaultConnection", None)
    name = getattr(conn, "__name__", None)
    detail = f"cassandra.cluster.DefaultConnection is {name} (chosen at import time)"
    return "default-connection", _applies(name == "GeventConnection"), detail


def _check_urllib3(module):
    pool = getattr(module, "ConnectionPool", None)
    queue_cls = getattr(pool, "QueueCls", None)
    owner = getattr(queue_cls, "__module__", None)
    if owner is None:
        return "pool-queue", None, "ConnectionPool.QueueCls not found"
    qualname = getattr(queue_cls, "__qualname__", "?")
    detail = f"ConnectionPool.QueueCls is {owner}.{qualname} (bound when urllib3 was imported)"
    return "pool-queue", _applies(str(owner).startswith("gevent")), detail


_LIBRARY_CHECKS = (
    ("psycopg2", "psycopg2", _check_psycopg2),
    ("grpc", "grpc", _check_grpc),
    ("zmq", "zmq", _check_zmq),
    ("cassandra", "cassandra.cluster", _check_cassandra),
    ("urllib3", "urllib3.connectionpool", _check_urllib3),
)


def _libraries():
    for library, module_name, check in _LIBRARY_CHECKS:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        try:
            name, ok, detail = check(module)
        except Exception as exc:
            name, ok, detail = "check", None, f"check failed: {type(exc).__name__}: {exc}"
        _emit("libraries", library=library, check=name, ok=ok, detail=detail)


# ---------------------------------------------------------------------------------------------
# Start-up facts
# ---------------------------------------------------------------------------------------------


def _normalize(name):
    return name.lower().replace("-", "_").replace(".", "_")


def _dist_version(project):
    """Installed version of ``project`` from ``*.dist-info``/``*.egg-info`` on sys.path."""
    wanted = _normalize(project)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            base, ext = os.path.splitext(name)
            if ext not in (".dist-info", ".egg-info"):
                continue
            if _normalize(base.split("-", 1)[0]) != wanted:
                continue
            for meta in ("METADATA", "PKG-INFO"):
                try:
                    with open(os.path.join(entry or ".", name, meta), encoding="utf-8") as fh:
                        for line in fh:
                            if line.startswith("Version:"):
                                return line.split(":", 1)[1].strip()
                            if not line.strip():
                                break
                except OSError:
                    continue
            parts = base.split("-")
            if len(parts) > 1:
                return parts[1]
    return None


def _emit_start():
    import platform  # small and patch-free; after the snapshot so it is counted as ours

    _emit(
        "start",
        executable=sys.executable,
        python_version=".".join(str(p) for p in sys.version_info[:3]),
        implementation=platform.python_implementation(),
        platform=sys.platform,
        pid=_PROBE_PID,
        gevent_version=_dist_version("gevent"),
        eventlet_version=_dist_version("eventlet"),
        mode=_S.mode,
        target=_S.spec.get("target"),
        startup_modules=_STARTUP_MODULES,
        probe_modules=sorted(set(sys.modules) - set(_STARTUP_MODULES)),
    )


def _read_args(argv):
    spec_file = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--spec-file" and i + 1 < len(argv):
            spec_file = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--spec-file="):
            spec_file = arg.split("=", 1)[1]
        i += 1
    return spec_file


def _configure(spec):
    """Spec, working directory and sys.path (before the start event reads versions)."""
    _S.spec = spec
    _S.mode = spec.get("mode") or "as-is"
    roots = []
    for root in spec.get("app_roots") or []:
        roots.append(os.path.join(os.path.abspath(root), ""))
    _S.app_roots = tuple(roots)
    chdir = spec.get("chdir")
    if chdir:
        os.chdir(chdir)
    entries = list(spec.get("pythonpath") or [])
    if chdir:
        entries.append(chdir)  # gunicorn puts the working directory on sys.path
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _install_hooks():
    """From here on every import, patch, fork and exit of the app is recorded."""
    sys.meta_path.insert(0, _ImportRecorder())
    _install_process_wrappers()
    try:
        _signal.signal(_signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        pass
    _apply_loaded_hooks()


# ---------------------------------------------------------------------------------------------
# In-process use (the pytest plugin loads this file by path; it never imports patchaudit either)
# ---------------------------------------------------------------------------------------------


def install_in_process(sink, app_roots=()):
    """Record imports and patch calls of the running process into ``sink`` (a callable).

    Only the import recorder and the post-import hooks (gevent.monkey, eventlet, zope.event)
    are installed: no fork/exit wrappers, no SIGTERM handler, no target. Events are the same
    dicts the probe writes as lines; a forked child's are dropped. ``step`` is "in-process",
    so blocking reports are recorded as ``block`` events whenever the monitor sends them.
    """
    _S.sink = sink
    _S.step = "in-process"
    _S.app_roots = tuple(os.path.join(os.path.abspath(r), "") for r in app_roots)
    monkey = sys.modules.get("gevent.monkey")
    if getattr(monkey, "saved", None):
        _S.patched = True  # patched before we were installed (a launcher)
        _S.first_patch_seen = True
    patcher = sys.modules.get("eventlet.patcher")
    if getattr(patcher, "already_patched", None):
        _S.patched = True
        _S.first_patch_seen = True
    if not any(isinstance(f, _ImportRecorder) for f in sys.meta_path):
        sys.meta_path.insert(0, _ImportRecorder())
    _apply_loaded_hooks()
    _maybe_emit_settings()


def uninstall_in_process():
    """Stop recording: the finder leaves ``sys.meta_path``; the wrappers stay but go quiet."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ImportRecorder)]
    _S.sink = None


def emit_owners():
    """The ``owners`` event (public for in-process use)."""
    _owners()


def emit_libraries():
    """The ``libraries`` events for the libraries loaded so far (public for in-process use)."""
    _libraries()


# ---------------------------------------------------------------------------------------------
# Main: the modes
# ---------------------------------------------------------------------------------------------


def _run():
    mode = _S.mode
    if mode not in ("as-is", "gunicorn", "gunicorn-preload", "uwsgi", "patch-first"):
        raise ValueError(f"unknown mode {mode!r}")
    if mode in ("gunicorn", "patch-first"):
        ok, _ = _guarded("patch", _probe_patch_all)
        if not ok:
            return
    imported, module = _guarded("import", _import_target)
    app = None
    if imported:
        _, app = _guarded("target", _resolve_callable, module)
        if mode in ("gunicorn-preload", "uwsgi"):
            # The server patches only once the app has loaded; a failed load never gets here.
            patched, _ = _guarded("patch", _probe_patch_all)
            if not patched:
                return
    # Even after a failed import the process is in some patched state worth describing.
    _maybe_emit_settings()
    if mode != "patch-first":
        _guarded("owners", _owners)
    _guarded("stale", _stale_scan)
    if mode == "patch-first":
        return
    if app is not None:
        _guarded("serve", _serve, app)
    _guarded("libraries", _libraries)


def main():
    spec_file = _read_args(sys.argv[1:])
    if not spec_file:
        sys.stderr.write("usage: _probe.py --spec-file SPEC.json\n")
        return 2
    try:
        with open(spec_file, encoding="utf-8") as fh:
            spec = json.load(fh)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        _S.fd = os.open(spec["events_path"], flags, 0o644)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"patchaudit probe: cannot read spec {spec_file}: {exc}\n")
        return 2
    # The monitor thread patchaudit switches on warns when psutil is missing; that warning is
    # the audit's side effect, not the application's output.
    warnings.filterwarnings("ignore", message="Unable to monitor memory usage")
    try:
        _configure(spec)
        _emit_start()
        _install_hooks()
        _run()
    except BaseException as exc:
        _leave_if_forked_child()
        _emit_error(exc, _S.step)
    _leave_if_forked_child()
    _emit("done", status="error" if _S.errors else "ok", errors=_S.errors, reason=None)
    return 1 if _S.errors else 0


if __name__ == "__main__":
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Exit without interpreter shutdown: app threads, atexit hooks and a patched threading
    # module must not be able to hang or crash the probe after its results are written.
    _real_exit(code)
