"""gunicorn's master and worker, emulated in one process: the config file and the server hooks.

Real gunicorn executes the config file in the master (as module ``__config__``), loads the app
there with ``preload_app``, runs ``on_starting`` and ``when_ready`` in the master, ``pre_fork``
in the master and ``post_fork`` in the worker before the gevent worker's ``patch_all()``, and
``post_worker_init`` once the worker has loaded the app. The audit job runs the same steps in
that order in one process (:mod:`._audit_job`), so gevent event subscribers the config registers
take effect at the patch, and a hook that sets a library up before the patch is seen doing so.
A gevent worker subclass with its own ``patch()`` is imported after the config, as the master
does, and that ``patch()`` replaces the plain ``patch_all()``.

The hooks get stand-ins for gunicorn's ``Arbiter`` and ``Worker``, never the real ones: importing
gunicorn here would load ``ssl``, ``logging`` and gevent's servers before the patch and change
what is audited. They carry what hooks use: ``cfg`` (the settings the ``--gunicorn-config`` job
computed), ``log``, ``pid``, ``ppid``, ``age``, ``proc_name``, ``num_workers``, ``app``.

Each step is a ``gunicorn`` event with the calls it made to :data:`WATCHED_CALLS` (found with a
profile function while the step runs; only those two Python functions are looked at).
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys

from ._events import emit
from ._frames import app_frame, frame_dict
from ._patches import maybe_emit_settings
from ._recorder import apply_loaded_hooks, record_file_import
from ._state import S

CONFIG_MODULE = "__config__"  # the name gunicorn gives the config module

#: Where each hook runs and what gunicorn passes it.
HOOKS = {
    "on_starting": ("master", ("server",)),
    "when_ready": ("master", ("server",)),
    "pre_fork": ("master", ("server", "worker")),
    "post_fork": ("worker", ("server", "worker")),
    "post_worker_init": ("worker", ("worker",)),
}

#: Library set-up calls whose timing relative to the worker's patch matters (module, function).
WATCHED_CALLS = {
    ("grpc.experimental.gevent", "init_gevent"),
    ("psycogreen.gevent", "patch_psycopg"),
}
_WATCHED_NAMES = frozenset(name for _, name in WATCHED_CALLS)


def exec_config(path):
    """Execute a gunicorn config file as gunicorn does; the module (also the config job's)."""
    if path.endswith((".py", ".pyc")):
        spec = importlib.util.spec_from_file_location(CONFIG_MODULE, path)
    else:  # gunicorn warns and loads it as source anyway
        loader = importlib.machinery.SourceFileLoader(CONFIG_MODULE, path)
        spec = importlib.util.spec_from_file_location(CONFIG_MODULE, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[CONFIG_MODULE] = module
    spec.loader.exec_module(module)
    return module


class _Log:
    """gunicorn's logger interface, written to stderr (``logging`` is not imported for it)."""

    def _write(self, level, msg, *args, **_kwargs):
        try:
            text = msg % args if args else str(msg)
            sys.stderr.write(f"[gunicorn hook] [{level}] {text}\n")
        except Exception:
            pass

    def debug(self, msg, *args, **kwargs):
        self._write("DEBUG", msg, *args, **kwargs)

    def info(self, msg, *args, **kwargs):
        self._write("INFO", msg, *args, **kwargs)

    def warning(self, msg, *args, **kwargs):
        self._write("WARNING", msg, *args, **kwargs)

    warn = warning

    def error(self, msg, *args, **kwargs):
        self._write("ERROR", msg, *args, **kwargs)

    exception = error
    critical = error

    def close_on_exec(self):
        pass

    def reopen_files(self):
        pass


class _Cfg:
    """The computed settings as attributes, like ``gunicorn.config.Config``."""

    def __init__(self, settings):
        self.__dict__.update(settings)

    def __getattr__(self, name):
        raise AttributeError(f"No configuration setting for: {name}")


class _Server:
    def __init__(self, cfg, log):
        self.cfg = cfg
        self.log = log
        self.pid = os.getpid()
        self.app = None
        self.WORKERS = {}
        self.num_workers = cfg.__dict__.get("workers", 1)
        self.proc_name = cfg.__dict__.get("proc_name") or "gunicorn"


class _Worker:
    def __init__(self, cfg, log, ppid):
        self.cfg = cfg
        self.log = log
        self.age = 1
        self.ppid = ppid
        self.pid = os.getpid()
        self.alive = True
        self.booted = False
        self.sockets = []
        self.app = None
        self.wsgi = None


class _Emulated:
    """The one master, worker, config module and custom worker class of the run."""

    module = None
    server = None
    worker = None
    worker_class = None


def _stand_ins():
    if _Emulated.server is None:
        settings = dict((S.spec.get("gunicorn") or {}).get("settings") or {})
        cfg, log = _Cfg(settings), _Log()
        _Emulated.server = _Server(cfg, log)
        _Emulated.worker = _Worker(cfg, log, os.getpid())
    return _Emulated.server, _Emulated.worker


class _CallWatch:
    """A profile function that records calls to :data:`WATCHED_CALLS` while a step runs."""

    def __init__(self):
        self.calls = []
        self.previous = None

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code.co_name in _WATCHED_NAMES:
            module = frame.f_globals.get("__name__")
            if (module, frame.f_code.co_name) in WATCHED_CALLS:
                caller = app_frame(frame.f_back)
                call = frame_dict(caller) if caller is not None else {"file": None, "line": None}
                call["function"] = module + "." + frame.f_code.co_name
                call["after_patch"] = S.patched  # a step may patch part-way through
                self.calls.append(call)
        if self.previous is not None:
            self.previous(frame, event, arg)

    def run(self, func, *args):
        self.previous = sys.getprofile()
        sys.setprofile(self)
        try:
            return func(*args)
        finally:
            sys.setprofile(self.previous)


_STAND_INS = ("_Server", "_Worker", "_Cfg", "_Log")


def _stand_in_gap(exc):
    """The step used something the stand-ins lack (``worker.tmp``, a setting the fallback does
    not know): a limit of the emulation, not an error of the app."""
    if not isinstance(exc, AttributeError):
        return False
    obj = getattr(exc, "obj", None)  # Python 3.10+
    if obj is not None:
        return type(obj).__name__ in _STAND_INS and type(obj).__module__ == __name__
    return any(str(exc).startswith(f"'{name}' object") for name in _STAND_INS)


def _step(step, process, func, args, where):
    watch = _CallWatch()
    fields = {"raised": None}
    patched = S.patched
    try:
        return watch.run(func, *args)
    except BaseException as exc:
        fields["raised"] = f"{type(exc).__name__}: {exc}"
        if not _stand_in_gap(exc):
            raise
        fields["stand_in_gap"] = True  # the hook stops there; the audit goes on
        return None
    finally:
        emit(
            "gunicorn",
            step=step,
            process=process,
            file=where[0],
            line=where[1],
            after_patch=patched,
            calls=watch.calls,
            **fields,
        )


def load_config():
    """The master executes the config file (before any patch, unless the file patches)."""
    path = (S.spec.get("gunicorn") or {}).get("config")
    if not path:
        return
    record_file_import(CONFIG_MODULE, path, "<target>")
    _Emulated.module = _step("config", "master", exec_config, (path,), (path, None))


def load_worker_class():
    """A gevent worker subclass with its own ``patch()``: the master imports it after the
    config (``Arbiter.setup``), and that ``patch()`` is what the worker runs."""
    custom = (S.spec.get("gunicorn") or {}).get("worker_patch")
    if not custom:
        return
    S.importing_target = True  # loaded by the server, like the target: a root of the graph
    try:
        obj = importlib.import_module(custom["module"])
    finally:
        S.importing_target = False
    for part in custom["qualname"].split("."):
        obj = getattr(obj, part)
    _Emulated.worker_class = obj


def has_own_patch():
    return _Emulated.worker_class is not None


def worker_patch():
    """The worker class's own ``patch()``, on an instance of it that carries the stand-in's
    attributes (no sockets: the probe serves on its own); its calls are recorded as a step."""
    cls = _Emulated.worker_class
    _, stand_in = _stand_ins()
    worker = cls.__new__(cls)  # no __init__: it wants the arbiter's listeners and a tmp file
    worker.__dict__.update(stand_in.__dict__)
    apply_loaded_hooks()
    code = getattr(cls.patch, "__code__", None)
    where = (code.co_filename, code.co_firstlineno) if code is not None else (None, None)
    _step(cls.__name__ + ".patch", "worker", worker.patch, (), where)
    maybe_emit_settings()


def fork():
    """The point where gunicorn forks the worker: threads the master started do not exist in a
    fork, so they are not counted as running when the worker patches."""
    threading = sys.modules.get("threading")
    if threading is not None:
        main = threading.main_thread()
        S.master_threads = frozenset(t.ident for t in threading.enumerate() if t is not main)


def run_hook(name, app=None):
    """Run one server hook the config defines, where and with what gunicorn would."""
    func = getattr(_Emulated.module, name, None)
    if not callable(func):
        return
    server, worker = _stand_ins()
    if app is not None:
        server.app = worker.wsgi = app
    process, params = HOOKS[name]
    objects = {"server": server, "worker": worker}
    code = getattr(func, "__code__", None)
    where = (code.co_filename, code.co_firstlineno) if code is not None else (None, None)
    _step(name, process, func, tuple(objects[p] for p in params), where)
