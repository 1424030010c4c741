"""Stale references held indirectly, found by walking from the app's module globals.

Where real code keeps an original besides a plain global: function defaults and keyword
defaults, closure cells, ``functools.partial`` objects, bound methods, containers, attributes of
objects built at import, and instances of an original class built before patching (a
module-level ``selectors.DefaultSelector()``, the ``queue.SimpleQueue`` inside a
``ThreadPoolExecutor``, a ``threading.local``). Bounded in depth, items, objects and time; the
caller guards it.
"""

import sys
from time import perf_counter

from ._machinery import MACHINERY_PREFIXES, in_packages
from ._state import STDLIB_DIR, S, real_get_ident

_MAX_DEPTH = 4  # steps from a module global: `POOL._work_queue` is 1, `H['k'].func.args[0]` 3
_MAX_ITEMS = 200  # items looked at per container
_MAX_VISITS = 500000  # objects looked at in one scan (about 0.8 s)
_MAX_SECONDS = 1.5

# Originals whose *instances* made before patching break under gevent. Tried under gevent:
# `get()` on an empty native SimpleQueue, and the worker of a pre-patch ThreadPoolExecutor
# (its `_work_queue`), block the only thread for good; a native `threading.local` is one slot
# for every greenlet; a native epoll selector blocks the process while it waits. Not listed,
# because they keep working: a pre-patch `queue.Queue`, `Event`, `Condition` or `Semaphore`
# (their waits take a lock from threading's patched `_allocate_lock`), and logging handlers'
# locks (gevent re-creates them). A bare native lock only hangs when it is held across a
# switch, which an object graph cannot show. A native queue or selector is harmless when a
# native thread waits on it (a logging QueueListener, a pool's worker started before patching):
# so those are reported only when no such thread is alive, or for a ThreadPoolExecutor that
# will start a worker after patching.
INSTANCE_ORIGINALS = (
    "queue.SimpleQueue",
    "threading.local",
    "_thread._local",
    "selectors.EpollSelector",
    "select.epoll",
)
_PER_THREAD = frozenset(("threading.local", "_thread._local"))  # wrong whoever uses them


class _Sample:
    def method(self):
        pass


_FUNCTION = type(lambda: None)
_BOUND = type(_Sample().method)
# Bound C methods (`QUEUE.get`, `(1).__add__`): only their ``__self__`` can be stale.
_C_METHODS = ("builtin_function_or_method", "builtin_method", "method-wrapper")
_GETSET = type(_FUNCTION.__dict__["__code__"])  # where a plain class's `__dict__` comes from
_ATOMS = frozenset((str, bytes, int, float, bool, complex, type(None)))


def instance_types(saved) -> dict:
    """``{id(class): "module.name"}`` for the classes in :data:`INSTANCE_ORIGINALS`."""
    found = {}
    for qualified in INSTANCE_ORIGINALS:
        module, _, attr = qualified.rpartition(".")
        items = saved.get(module)
        cls = items.get(attr) if isinstance(items, dict) else None
        if isinstance(cls, type):
            found.setdefault(id(cls), qualified)
    return found


def app_modules(skipped) -> list:
    """``[(name, module)]`` whose code is the application's (under the spec's app roots, or
    else outside the stdlib and site-packages), in import order; ``skipped(name)`` excludes."""
    out = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or skipped(name) or getattr(module, "__name__", None) != name:
            continue
        if "site-packages" in file or "dist-packages" in file:
            continue
        if S.app_roots:
            if not any(file.startswith(root) for root in S.app_roots):
                continue
        elif file.startswith(STDLIB_DIR):
            continue
        out.append((name, module))
    return out


class Walk:
    """One bounded walk; ``hits`` collects ``(holder, kind, module, path, how, original)``."""

    def __init__(self, originals, instances):
        self.originals = originals  # id -> [object, "module.attr", {saved from}]
        self.instances = instances  # id(class) -> "module.attr"
        self.deadline = perf_counter() + _MAX_SECONDS
        self.visits = 0
        self.hits = []
        self.seen = set()
        self.partial_types = _partial_types()
        self.classes = {}  # id(type) -> made_from(type), for the scan's duration
        self.threads = None  # native_threads(), computed when first needed
        self.complete = True  # false once a bound was reached (or the walk failed)
        futures = sys.modules.get("concurrent.futures.thread")
        self.executor_type = getattr(futures, "ThreadPoolExecutor", None)

    def exhausted(self) -> bool:
        if self.visits >= _MAX_VISITS or perf_counter() > self.deadline:
            self.complete = False
        return not self.complete

    def modules(self, modules) -> None:
        """Every global of the app modules ``[(name, module)]``, and the attributes of the
        classes they define. An object held by several of them (``from .jobs import POOL``) is
        walked in each, so that the module that built it reports it whatever the order; every
        other object is walked once in the scan."""
        globals_of = []
        holders = {}
        for name, module in modules:
            try:
                items = [(k, v) for k, v in list(vars(module).items()) if _public(k)]
            except Exception:
                continue
            globals_of.append((name, items))
            for _, value in items:
                holders[id(value)] = holders.get(id(value), 0) + 1
        once = self.seen
        for name, items in globals_of:
            for key, value in items:
                if self.exhausted():
                    return
                self.seen = set() if holders[id(value)] > 1 else once
                self.holder = (name, "module", name)
                if issubclass(type(value), type):  # not isinstance: a proxy's __class__ is code
                    if getattr(value, "__module__", None) == name and value.__qualname__ == key:
                        self.klass(name, value)
                    continue
                self.value(value, key, None, 0)
        self.seen = once

    def klass(self, module_name, cls):
        self.holder = (f"{module_name}.{cls.__qualname__}", "class", module_name)
        for key, value in list(type.__dict__["__dict__"].__get__(cls).items()):
            if not _public(key):
                continue
            if type(value) in (staticmethod, classmethod):
                value = value.__func__
            self.value(value, key, None, 0)

    def value(self, value, path, how, depth):
        self.visits += 1
        entry = self.originals.get(id(value))
        if entry is not None and entry[0] is value:
            if depth:  # at depth 0 it is a plain binding: the referrer scan reports it
                self.hit(path, how, entry[1])
            return
        tp = type(value)
        if tp in _ATOMS or id(value) in self.seen or self.exhausted():
            return
        self.seen.add(id(value))
        made_from = self.made_from(tp)
        if made_from is not None:
            if made_from in _PER_THREAD or not self.native_threads():
                self.hit(path, "instance", made_from)
            return
        if depth >= _MAX_DEPTH:
            return
        step = depth + 1
        if tp is _FUNCTION:
            self.function(value, path, step)
        elif issubclass(tp, dict):  # C-level access: a subclass's own methods never run
            for key, item in list(dict.items(value))[:_MAX_ITEMS]:
                self.value(item, f"{path}[{_key(key)}]", "container", step)
        elif issubclass(tp, (list, tuple)):
            copy = list.copy if issubclass(tp, list) else tuple
            items = copy(value)
            for index, item in enumerate(items[:_MAX_ITEMS]):
                self.value(item, f"{path}[{index}]", "container", step)
        elif tp in (set, frozenset):
            for item in list(value)[:_MAX_ITEMS]:
                self.value(item, f"{path}[*]", "container", step)
        elif tp in self.partial_types:
            self.value(value.func, f"{path}.func", "partial", step)
            for index, item in enumerate(value.args[:_MAX_ITEMS]):
                self.value(item, f"{path}.args[{index}]", "partial", step)
            for key, item in list((value.keywords or {}).items())[:_MAX_ITEMS]:
                self.value(item, f"{path}.keywords[{_key(key)}]", "partial", step)
        elif tp is _BOUND:
            self.value(value.__func__, f"{path}.__func__", "method", step)
            self.value(value.__self__, f"{path}.__self__", "method", step)
        elif tp.__module__ == "builtins" and tp.__name__ in _C_METHODS:
            owner = value.__self__
            if owner is not None and type(owner) is not type(sys):
                self.value(owner, f"{path}.__self__", "method", step)
        elif not issubclass(tp, type) and tp is not type(sys):
            self.attributes(value, path, step)

    def made_from(self, tp):
        """The original ``tp`` is or subclasses (a `threading.local` subclass shares its slot)."""
        if id(tp) not in self.classes:
            mro = getattr(tp, "__mro__", None) or (tp,)
            names = [self.instances.get(id(base)) for base in mro]
            self.classes[id(tp)] = ([n for n in names if n] or [None])[0]
        return self.classes[id(tp)]

    def function(self, func, path, step):
        # Another module's plain function is that module's business; closures are reported
        # where they are held, since nothing else names them.
        qualname = getattr(func, "__qualname__", "") or ""
        if func.__module__ != self.holder[2] and "<locals>" not in qualname:
            return
        code = func.__code__
        defaults = func.__defaults__ or ()
        names = code.co_varnames[code.co_argcount - len(defaults) : code.co_argcount]
        for index, name in enumerate(names):
            self.value(defaults[index], f"{path}({name}=)", "default", step)
        for name, item in list((func.__kwdefaults__ or {}).items()):
            self.value(item, f"{path}({name}=)", "default", step)
        cells = func.__closure__ or ()
        for index, name in enumerate(code.co_freevars[: len(cells)]):
            cell = cells[index]
            try:
                item = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            self.value(item, f"{path}<{name}>", "closure", step)

    def attributes(self, obj, path, step):
        # Only a plain instance dict: a class may define `__dict__` or `__getattr__` as code
        # (lazy proxies), and the scan must not run the app's code.
        tp = type(obj)
        for base in tp.__mro__:
            descriptor = base.__dict__.get("__dict__")
            if descriptor is not None:
                break
        if type(descriptor) is not _GETSET:
            return
        try:
            attrs = descriptor.__get__(obj, tp)
        except Exception:
            return
        if type(attrs) is not dict:
            return
        executor = self.executor_type is not None and issubclass(tp, self.executor_type)
        for key, item in list(attrs.items())[:_MAX_ITEMS]:
            if executor and key == "_work_queue":
                # Its idle workers wait in `get()`: native threads started before patching do
                # so harmlessly; a worker it starts now is a greenlet, and blocks the process.
                made_from = self.made_from(type(item))
                if made_from and _starts_workers(attrs):
                    self.hit(f"{path}.{key}", "instance", made_from)
            elif type(key) is str:
                self.value(item, f"{path}.{key}", "attribute", step)

    def native_threads(self):
        """Whether a native thread other than this one and gevent's own is alive: it may be
        the one that waits on a native queue or selector (a logging QueueListener), which is
        harmless; only when there is none must a greenlet be the one that waits."""
        if self.threads is None:
            self.threads = _other_native_threads()
        return self.threads

    def hit(self, path, how, original):
        holder, kind, module = self.holder
        self.hits.append((holder, kind, module, path, how, original))


def _starts_workers(attrs):
    """Whether a ThreadPoolExecutor (its ``__dict__``) may still start a worker."""
    threads, most = attrs.get("_threads"), attrs.get("_max_workers")
    if type(threads) is not set or type(most) is not int:
        return False  # not the stdlib's layout: cannot tell
    return len(threads) < most and attrs.get("_shutdown") is False


def _other_native_threads():
    frames = getattr(sys, "_current_frames", None)
    if frames is None:
        return True  # cannot tell: assume one, and report nothing that depends on it
    me = real_get_ident()
    for ident, frame in list(frames().items()):
        while ident != me and frame is not None:
            if in_packages(frame.f_globals.get("__name__") or "", MACHINERY_PREFIXES):
                break  # gevent's monitor or thread pool
            frame = frame.f_back
        else:
            if ident != me:
                return True
    return False


def _partial_types():
    functools = sys.modules.get("functools")  # loaded at start-up; never imported here
    names = ("partial", "partialmethod")
    return tuple(t for t in (getattr(functools, n, None) for n in names) if isinstance(t, type))


def _public(name):
    return type(name) is str and not (name.startswith("__") and name.endswith("__"))


def _key(key):
    text = repr(key) if type(key) in (str, int, float, bool, bytes) else "..."
    return text if len(text) <= 40 else "..."
