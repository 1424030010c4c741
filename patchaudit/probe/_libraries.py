"""What the process ended up with: owners of the patched names, and checks of C-driver libraries.

Only libraries the app loaded are checked; nothing is imported for them.
"""

import gc
import sys

from ._events import emit, jsonable
from ._machinery import OWNER_NAMES


def owners() -> None:
    """The ``owners`` event: ``__module__`` of ``socket.socket``, ``time.sleep``, ... now."""
    found = {}
    for dotted in OWNER_NAMES:
        mod_name, _, attr = dotted.partition(".")
        module = sys.modules.get(mod_name)
        obj = getattr(module, attr, None) if module is not None else None
        found[dotted] = getattr(obj, "__module__", None) if obj is not None else None
    emit("owners", owners=found)


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
        else f"wait callback {jsonable(callback)}"
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


# (library, module that must be loaded, check)
_LIBRARY_CHECKS = (
    ("psycopg2", "psycopg2", _check_psycopg2),
    ("grpc", "grpc", _check_grpc),
    ("zmq", "zmq", _check_zmq),
    ("cassandra", "cassandra.cluster", _check_cassandra),
    ("urllib3", "urllib3.connectionpool", _check_urllib3),
)


def libraries() -> None:
    """One ``libraries`` event per checked library present in ``sys.modules``."""
    for library, module_name, check in _LIBRARY_CHECKS:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        try:
            name, ok, detail = check(module)
        except Exception as exc:
            name, ok, detail = "check", None, f"check failed: {type(exc).__name__}: {exc}"
        emit("libraries", library=library, check=name, ok=ok, detail=detail)
