"""The stale-reference scan: who still holds an original that ``gevent.monkey`` replaced."""

import gc
import sys

from ._events import emit
from ._machinery import BOOKKEEPING_PREFIX, MACHINERY_PREFIXES, PRIVATE_NAME, in_packages
from ._stale_walk import Walk, app_modules, instance_types
from ._state import PROBE_FILES, STDLIB_DIR

# Never holders: the machinery, and the probe itself (its boot script is ``__main__``).
_SKIPPED_PACKAGES = MACHINERY_PREFIXES + (PRIVATE_NAME,)


def _skipped_holder_module(name):
    if not isinstance(name, str):
        return True
    if name == "__main__":  # the probe's boot script, or under `patchaudit run` the app's own
        return _module_file(name) in PROBE_FILES
    if in_packages(name, _SKIPPED_PACKAGES):
        return True
    # The C modules that *implement* the originals (posix.waitpid, _socket.socket,
    # _thread.RLock, ...) hold them by definition; nothing calls through them by accident.
    if name in sys.builtin_module_names:
        return True
    file = _module_file(name)
    return bool(file and file.startswith(STDLIB_DIR) and not file.endswith(".py"))


def _module_file(name):
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    return file if isinstance(file, str) else None


def stale_scan() -> None:
    """The ``stale`` events and the ``stale_scan`` summary (nothing when gevent never patched)."""
    scanned = _scan()
    if scanned is None:
        return
    found, originals, walk = scanned
    for fields in found:
        emit("stale", **fields)
    emit(
        "stale_scan",
        originals=originals,
        holders=len(found),
        walked=walk.visits,
        complete=walk.complete,
    )


def stale_references():
    """``(holders, number of originals scanned)``, or None when gevent never patched.

    Each holder is a dict with the fields of the ``stale`` event. Public for in-process use.
    """
    scanned = _scan()
    return None if scanned is None else scanned[:2]


def _scan():
    monkey = sys.modules.get("gevent.monkey")
    saved = getattr(monkey, "saved", None)
    if not saved:
        return None
    # id(original) -> [original, "module.attr" it was saved as, {modules it was saved from}]
    originals = {}
    for mod_name, items in list(saved.items()):
        if str(mod_name).startswith(BOOKKEEPING_PREFIX) or not isinstance(items, dict):
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

    def add(holder, kind, holder_module, name, entry, how="binding"):
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
                "how": how,
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
        pending = [(sub, "__bases__") for sub in _subclasses(orig)]
        visited = set()
        while pending:
            sub, how = pending.pop()
            if id(sub) in visited:
                continue
            visited.add(id(sub))
            holder_module = getattr(sub, "__module__", None)
            holder = f"{holder_module}.{sub.__qualname__}"
            add(holder, "subclass", holder_module, how, entry, "subclass")
            pending.extend((s, "__mro__") for s in _subclasses(sub))

    # What the app holds less directly: defaults, closures, partials, containers, instances.
    walk = Walk(originals, instance_types(saved))
    try:
        walk.modules(app_modules(_skipped_holder_module))
    except Exception:  # an object the walk did not foresee: keep what was found
        walk.complete = False
    for holder, kind, holder_module, path, how, original in walk.hits:
        add(holder, kind, holder_module, path, [None, original, set()], how)
    return found, len(originals), walk


def _subclasses(cls):
    try:
        return list(type.__subclasses__(cls))
    except TypeError:
        return []
