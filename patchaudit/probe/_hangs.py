"""What a hang left waiting: every parked greenlet and every other native thread, one dump.

Taken on the launcher's SIGTERM (``terminated``) and when requests stop completing while
serving (``stalled``). py-spy cannot show parked greenlets: their frames are off every thread.
"""

import sys

from ._frames import app_frame, stack

_WAITS = frozenset({"wait", "get", "put", "acquire", "join", "peek", "recv", "accept", "read"})
_SHOWN_TYPES = {"LockType": "Lock", "_AtomicSemaphore": "Lock"}


def main_greenlet_stack():
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
    return stack(frame) if frame is not None else None


def dump(request_codes=()):
    """``(greenlets, threads)``: every parked greenlet and every other native thread.

    ``request_codes`` are the code objects of the probe's WSGI wrapper: a greenlet with one of
    them on its stack is serving a request (``request: true``).
    """
    try:
        return _parked_greenlets(request_codes), thread_stacks()
    except Exception:
        return [], []


def _parked_greenlets(request_codes, limit=50):
    """Every greenlet switched out with a frame (parked on an event, a queue, a sleep), with
    what it waits on where its innermost waiting frame says so (``waits_on``: the ``self`` of
    gevent's ``wait``/``get``/``acquire``/``join``) and the gevent object that holds its wake-up
    (``waits_for``: the lock, event or queue, named by the app variable that holds it)."""
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return []
    import gc

    current = greenlet.getcurrent()
    objects = gc.get_objects()
    try:
        waited = _waited_objects(objects, greenlet.greenlet)
    except Exception:  # the dump matters more than naming what each greenlet waits on
        waited = {}
    found = []
    for obj in objects:
        if len(found) >= limit:
            break
        if not isinstance(obj, greenlet.greenlet) or obj is current:
            continue
        frame = getattr(obj, "gr_frame", None)
        if frame is None or obj.parent is None:  # not started, dead, or the main greenlet
            continue
        found.append(
            {
                "greenlet": type(obj).__name__,
                "stack": stack(frame),
                "waits_on": _waits_on(frame),
                "waits_for": _described(waited.get(id(obj)), frame),
                "request": _has_code(frame, request_codes),
            }
        )
    return found


def _waited_objects(objects, greenlet_type):
    """``{id(greenlet): gevent object}`` for every greenlet linked to a gevent lock, event,
    result or queue. gevent keeps a waiter as its ``switch`` in the object's link list, or as a
    ``Waiter`` in a queue's deque; the compiled classes hide those attributes, but the garbage
    collector still sees them as the object's referents."""
    import gc

    found = {}
    for obj in objects:
        if not _gevent_object(obj) or isinstance(obj, greenlet_type):
            continue
        if type(obj).__module__.startswith(("gevent.libev", "gevent.libuv")):
            continue  # a sleep's timer watcher: the app's own line says more
        name = type(obj).__name__
        if name in ("Hub", "Waiter") or "Waiter" in name or "Greenlet" in name:
            continue
        for ref in gc.get_referents(obj):
            if not isinstance(ref, (list, tuple)) and type(ref).__name__ != "deque":
                continue
            for item in ref:
                waiter = getattr(item, "__self__", None)  # a parked greenlet's bound switch
                if isinstance(waiter, greenlet_type):
                    found.setdefault(id(waiter), obj)
                elif "Waiter" in type(item).__name__:
                    for inner in gc.get_referents(item):
                        if isinstance(inner, greenlet_type):
                            found.setdefault(id(inner), obj)
    return found


def _gevent_object(obj):
    module = getattr(type(obj), "__module__", None)  # a descriptor on some metaclasses
    return isinstance(module, str) and module.startswith("gevent.")


def _described(obj, frame):
    if obj is None:
        return None
    kind = type(obj).__name__
    return {"type": _SHOWN_TYPES.get(kind, kind), "name": _name_of(obj, frame)}


def _name_of(obj, frame):
    """The app's name for ``obj`` as seen from the innermost app frame of a parked greenlet:
    a local or global variable, an attribute of one, or a str-keyed item of a dict."""
    for f in _frames_out(app_frame(frame), 8):
        for scope in (f.f_locals, f.f_globals):
            for name, value in list(scope.items()):
                if name.startswith("__"):
                    continue
                if value is obj:
                    return name
                inner = _inner_name(value, obj)
                if inner is not None:
                    return name + inner
    return None


def _inner_name(value, obj):
    if isinstance(value, dict):
        for key, item in list(value.items())[:200]:
            if item is obj and isinstance(key, str):
                return "[" + repr(key) + "]"
            attrs = getattr(item, "__dict__", None)
            if isinstance(key, str) and isinstance(attrs, dict):
                for attr, held in attrs.items():
                    if held is obj:
                        return "[" + repr(key) + "]." + attr
        return None
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict) and not isinstance(value, type(sys)):
        for attr, held in list(attrs.items()):
            if held is obj:
                return "." + attr
    return None


def _frames_out(frame, limit):
    while frame is not None and limit > 0:
        yield frame
        frame = frame.f_back
        limit -= 1


def _has_code(frame, codes):
    return any(f.f_code in codes for f in _frames_out(frame, 200))


def _waits_on(frame):
    """``Queue.get`` for a greenlet parked in a gevent queue's get, and so on; else None."""
    owner, name = _waiting_self(frame, _gevent_object)
    return None if owner is None else f"{type(owner).__name__}.{name}"


def _waiting_self(frame, accepts, outermost=False):
    """(object, method) of the innermost ``wait``/``get``/``acquire``/... frame whose ``self``
    ``accepts`` takes (the outermost one: the call the app made, ``Event.wait`` rather than
    the ``Condition.wait`` inside it); (None, None) when no Python frame shows one."""
    found = (None, None)
    while frame is not None:
        code = frame.f_code
        owner = frame.f_locals.get("self") if "self" in code.co_varnames[:1] else None
        if owner is not None and code.co_name in _WAITS and accepts(owner):
            found = (owner, code.co_name)
            if not outermost:
                break
        frame = frame.f_back
    return found


_THREAD_WAITS = ("threading", "queue", "concurrent.futures", "multiprocessing", "gevent.")


def _stdlib_waitable(obj):
    module = getattr(type(obj), "__module__", None)
    return isinstance(module, str) and module.startswith(_THREAD_WAITS)


def thread_stacks():
    """Every other native thread's stack (the calling thread's is not part of the dump), with
    the stdlib or gevent event, condition or queue it waits in when a Python frame shows it
    (``waits_for`` as for greenlets)."""
    here = sys._getframe()  # the calling thread is running this very frame
    found = []
    for ident, frame in list(sys._current_frames().items())[:21]:
        if frame is here:
            continue
        try:
            owner, _ = _waiting_self(frame, _stdlib_waitable, outermost=True)
            waits_for = _described(owner, frame)
        except Exception:
            waits_for = None
        found.append({"thread": ident, "stack": stack(frame), "waits_for": waits_for})
    return found[:20]
