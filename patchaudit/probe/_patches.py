"""Patch calls: a table of watched patch functions, gevent's patch events, gevent's settings.

Each :class:`Watched` entry is one patch function of gevent or eventlet (in the style of
blockbuster's registry: one entry per watched function, each with its own activation). An
entry is activated by the post-import hook of the module it lives in, and replaces the
function with the one wrapper below, which turns every outermost call into a ``patch`` event.
"""

import sys
import warnings

from ._blocking import record_block
from ._events import emit, jsonable
from ._frames import caller_frame, where
from ._hubtime import install_hub_timer
from ._machinery import BOOKKEEPING_PREFIX, SETTINGS_KEY
from ._state import MAIN_IDENT, PROBE_FILES, S, in_forked_child, real_get_ident


def _threads_now():
    threading = sys.modules.get("threading")
    if threading is None:
        return ["MainThread"]
    try:
        # The main thread by its role: an embedding server names it (uWSGI: uWSGIWorker1Core0).
        main = threading.main_thread()
        return [
            "MainThread" if t is main else t.name
            for t in threading.enumerate()
            if t.ident not in S.master_threads
        ]
    except Exception:
        return None


def patch_context(framework, function, args, kwargs, via="wrapper") -> dict:
    """Fields known before the real patch call runs (and the phase flips to post-patch)."""
    try:
        frame = caller_frame(sys._getframe(2))
    except ValueError:  # called straight from C (uWSGI's gevent plugin): no Python caller
        frame = None
    if S.probe_patch_label is not None:
        file, line = S.probe_patch_label, None
    elif frame is None and S.mode == "run":
        file, line = "<launcher>", None  # called from C by the launcher itself
    else:
        file, line = where(frame)
    fields = {
        "framework": framework,
        "function": function,
        "args": args,
        "kwargs": jsonable(kwargs),
        "file": file,
        "line": line,
        "main_thread": real_get_ident() == MAIN_IDENT,
        "threads": _threads_now(),
        "via": via,
    }
    if not S.first_patch_seen:
        S.first_patch_seen = True
        fields["modules_before"] = sorted(sys.modules)
    S.patched = True
    return fields


def _warning_dicts(caught, fields, category=None):
    out = []
    for w in caught:
        if category is not None and not issubclass(w.category, category):
            continue
        file, line = w.filename, w.lineno
        if file in PROBE_FILES:
            # gevent warns with stacklevel=3, which lands on our wrapper: point at the caller.
            file, line = fields["file"], fields["line"]
        out.append(
            {"category": w.category.__name__, "message": str(w.message), "file": file, "line": line}
        )
    return out


def _reemit(caught, category, fields=None):
    """Warnings that are not the recorded category go on as if the probe were not there.

    In-process every warning goes on (the user's filters, e.g. ``-W error``, still apply),
    pointed at the patch call rather than at the wrapper.
    """
    for w in caught:
        if category is None or not issubclass(w.category, category) or S.sink is not None:
            file, line = w.filename, w.lineno
            if fields is not None and file in PROBE_FILES and fields.get("file"):
                file, line = fields["file"], fields.get("line") or 0
            if S.sink is not None:  # `-W error` raises at the patch call, as without us
                warnings.warn_explicit(w.message, w.category, file, line)
                continue
            try:
                warnings.warn_explicit(w.message, w.category, file, line)
            except Exception:
                pass


class Watched:
    """One watched patch function.

    ``module`` holds it (its post-import hook activates the entry); ``name`` is the attribute,
    or a prefix ending in ``*`` for every function so named (gevent.monkey's ``patch_*``).
    ``keep(module)`` gives the warning category recorded in the event, the others being shown
    as if the probe were not there; without ``keep`` every warning is recorded and none shown.
    ``extra(module)`` adds fields after the call, ``after()`` runs after the event. An entry
    with ``alias_of`` re-binds its name to the wrapper of that other entry's function.
    """

    def __init__(self, framework, module, name, keep=None, extra=None, after=None, alias_of=None):
        self.framework = framework
        self.module = module
        self.name = name
        self.keep = keep
        self.extra = extra
        self.after = after
        self.alias_of = alias_of

    def names(self, module) -> list:
        if not self.name.endswith("*"):
            return [self.name]
        prefix = self.name[:-1]
        return [
            name
            for name, func in list(vars(module).items())
            if name.startswith(prefix) and callable(func) and not isinstance(func, type)
        ]

    def activate(self, module) -> None:
        source = None
        if self.alias_of is not None:
            source = sys.modules.get(self.alias_of.module)
            if source is None:
                return
            self.alias_of.activate(source)
        for name in self.names(module):
            func = getattr(module, name, None)
            if func is None or getattr(func, "_patchaudit_wrapper", False):
                continue
            if source is not None:
                setattr(module, name, getattr(source, name))
            else:
                setattr(module, name, self.wrap(name, func, module))

    def wrap(self, name, func, module):
        entry = self

        def wrapper(*args, **kwargs):
            if S.patch_depth or in_forked_child():
                return func(*args, **kwargs)
            fields = patch_context(entry.framework, name, len(args), kwargs)
            category = entry.keep(module) if entry.keep is not None else None
            S.patch_depth += 1
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
                        fields["returned"] = jsonable(result)
                        fields["raised"] = raised
                        fields["warnings"] = _warning_dicts(caught, fields, category)
                        if entry.extra is not None:
                            fields.update(entry.extra(module))
                        emit("patch", **fields)
                        if entry.after is not None:
                            entry.after()
                if entry.keep is not None:
                    _reemit(caught, category, fields)
                return result
            finally:
                S.patch_depth -= 1

        wrapper.__wrapped__ = func
        wrapper.__name__ = getattr(func, "__name__", name)
        wrapper.__qualname__ = getattr(func, "__qualname__", name)
        wrapper.__doc__ = getattr(func, "__doc__", None)
        wrapper.__module__ = getattr(func, "__module__", entry.module)
        wrapper._patchaudit_wrapper = True
        return wrapper


def maybe_emit_settings() -> None:
    if S.settings_emitted:
        return
    monkey = sys.modules.get("gevent.monkey")
    saved = getattr(monkey, "saved", None)
    if not saved:
        return
    S.settings_emitted = True
    names = {}
    for mod, items in saved.items():
        if str(mod).startswith(BOOKKEEPING_PREFIX) or not isinstance(items, dict):
            continue
        names[mod] = sorted(items)
    emit("settings", settings=jsonable(saved.get(SETTINGS_KEY)), saved=names)
    if S.on_patched is not None:
        S.on_patched()


def _already_patched(patcher):
    return {"already_patched": jsonable(dict(getattr(patcher, "already_patched", {}) or {}))}


_EVENTLET_PATCHER = Watched("eventlet", "eventlet.patcher", "monkey_patch", extra=_already_patched)

#: The watched patch functions. gevent's module globals are replaced right after gevent.monkey
#: executes, so both ``gevent.monkey.patch_all()`` and ``from gevent.monkey import patch_all``
#: get the wrapper, and patch_all's own calls to patch_os() etc. (global look-ups) hit a nested
#: wrapper, which is not an event. ``eventlet/__init__`` binds ``monkey_patch =
#: patcher.monkey_patch`` after importing the (already watched) patcher; its entry only matters
#: if the patcher's hook could not be installed.
WATCHED = (
    Watched(
        "gevent",
        "gevent.monkey",
        "patch_*",
        keep=lambda monkey: getattr(monkey, "MonkeyPatchWarning", None),
        after=maybe_emit_settings,
    ),
    _EVENTLET_PATCHER,
    Watched("eventlet", "eventlet", "monkey_patch", alias_of=_EVENTLET_PATCHER),
)


def close_event_patch() -> None:
    """End an event-only patch_all (also at step boundaries, in case it never finished)."""
    if S.event_patch_open:
        S.event_patch_open = False
        S.patch_depth -= 1


def _on_zope_event(event):
    """zope.event subscriber: a patch_all that bypassed our wrapper, and blocking reports."""
    tp = type(event)
    if getattr(tp, "__module__", "") != "gevent.events":
        return
    try:
        if tp.__name__ == "EventLoopBlocked":
            record_block(event)
        elif tp.__name__ == "PeriodicMonitorThreadStartedEvent":
            install_hub_timer(event.monitor)  # in the hub's thread, as the hub starts
        elif tp.__name__ == "GeventWillPatchAllEvent" and not S.patch_depth:
            if in_forked_child():
                return
            settings = getattr(event, "patch_all_arguments", None)
            fields = patch_context("gevent", "patch_all", None, settings, "GeventWillPatchAllEvent")
            fields.update(returned=None, raised=None, warnings=[])
            emit("patch", **fields)
            # Until GeventDidPatchAllEvent, the patch_os() etc. it calls are nested calls.
            S.patch_depth += 1
            S.event_patch_open = True
        elif tp.__name__ == "GeventDidPatchAllEvent" and S.event_patch_open:
            close_event_patch()
            maybe_emit_settings()
    except Exception:
        pass  # an exception here would cancel or break the app's patching


def _hook_zope_event(zope_event):
    subscribers = getattr(zope_event, "subscribers", None)
    if isinstance(subscribers, list) and _on_zope_event not in subscribers:
        subscribers.append(_on_zope_event)


POST_IMPORT_HOOKS = {entry.module: entry.activate for entry in WATCHED}
POST_IMPORT_HOOKS["zope.event"] = _hook_zope_event
