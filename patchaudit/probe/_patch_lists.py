"""The patch-lists job (``--patch-lists``): what the installed gevent's ``patch_all()`` does.

It prints exactly one JSON object on stdout and exits 0, or prints ``{"error": ...,
"error_kind": ...}`` and exits non-zero (``patchaudit._gevent_patches`` reads it).

Why a child process instead of importing gevent in patchaudit itself: monkey-patching is a
one-way, process-wide change, the lists differ between gevent releases, Python versions,
platforms and ``GEVENT_*`` environment variables, and the application under audit may live in a
different venv. So the answer must come from the target interpreter, in a throw-away process.
"""

import json
import platform
import sys

from ._machinery import BOOKKEEPING_PREFIX, PRIVATE_NAME, in_packages

# Stdlib modules that gevent patches more completely when they are already imported (e.g.
# ``logging._lock`` is only replaced if logging was imported first). A typical application has
# imported all of these before it (too late) patches, so importing them makes the lists complete.
_PREIMPORT = (
    "logging",
    "threading",
    "_threading_local",
    "queue",
    "selectors",
    "select",
    "socket",
    "ssl",
    "subprocess",
    "signal",
    "concurrent.futures.thread",
)

# gevent.monkey functions that have ``patch_`` names but are generic helpers, not per-option
# patchers.
_NOT_OPTION_FUNCS = frozenset(["patch_all", "patch_module", "patch_item"])

# Patch functions whose name does not match the patch_all keyword that triggers them.
_IRREGULAR_OPTION = {"patch_selectors": "select", "patch_dns": "socket"}

# Modules whose attributes may legitimately change while patching, and the probe itself (its
# boot script is ``__main__``); never report them.
_NOT_AUDITED_PREFIXES = ("gevent", "greenlet", "zope", "__main__", PRIVATE_NAME)


def _is_audited_module(name):
    return not in_packages(name, _NOT_AUDITED_PREFIXES)


class _ProbeError(Exception):
    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


def _describe(obj):
    """'module.qualname' for functions/classes, the module name for modules, else the type."""
    if isinstance(obj, type(sys)):
        return getattr(obj, "__name__", "module")
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if isinstance(qualname, str) and isinstance(module, str):
        return module + "." + qualname
    if isinstance(qualname, str):
        return qualname
    tp = type(obj)
    tp_module = getattr(tp, "__module__", "builtins")
    return tp_module + "." + getattr(tp, "__qualname__", tp.__name__)


def _json_default(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def _saved_names(saved):
    """Snapshot gevent.monkey.saved as {target module: set(names)}, minus bookkeeping keys."""
    out = {}
    for mod, items in saved.items():
        if str(mod).startswith(BOOKKEEPING_PREFIX) or not isinstance(items, dict):
            continue
        out[mod] = set(items)
    return out


def _option_for_func(func_name, options):
    if func_name in _IRREGULAR_OPTION:
        return _IRREGULAR_OPTION[func_name]
    suffix = func_name[len("patch_") :]
    if suffix in options:
        return suffix
    return func_name


def probe(startup_modules):
    # Deliberate: record the interpreter facts even if gevent is missing.
    result = {
        "python_version": ".".join(str(part) for part in sys.version_info[:3]),
        "implementation": platform.python_implementation(),
        "platform": sys.platform,
        "executable": sys.executable,
        "startup_modules": startup_modules,
    }

    for name in _PREIMPORT:
        try:
            __import__(name)
        except ImportError:  # e.g. ssl missing from a minimal build
            pass

    try:
        import gevent
        import gevent.monkey as monkey
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing == "gevent" or missing.startswith("gevent."):
            raise _ProbeError("gevent-missing", "gevent is not installed") from exc
        raise _ProbeError("gevent-import", f"importing gevent failed: {exc}") from exc

    import inspect
    import warnings

    result["gevent_version"] = getattr(gevent, "__version__", "unknown")
    result["gevent_file"] = getattr(gevent, "__file__", None)

    options = {}
    positional = []  # what positional arguments bind to, in order (a list survives JSON)
    for pname, param in inspect.signature(monkey.patch_all).parameters.items():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            positional.append(pname)
        default = None if param.default is param.empty else param.default
        options[pname] = _json_default(default)
    result["options"] = options
    result["positional"] = positional

    saved = monkey.saved
    # Names each wrapped patch function added to ``saved``. Inner calls claim their names first,
    # so a patcher that calls another wrapped patcher is only credited with the remainder.
    by_option = {}
    claimed = set()
    call_order = []

    def make_wrapper(func_name, func):
        def wrapper(*args, **kwargs):
            before = _saved_names(saved)
            call_order.append(func_name)
            try:
                return func(*args, **kwargs)
            finally:
                after = _saved_names(saved)
                key = _option_for_func(func_name, options)
                bucket = by_option.setdefault(key, {})
                for mod, names in after.items():
                    for item in names - before.get(mod, set()):
                        if (mod, item) in claimed:
                            continue
                        claimed.add((mod, item))
                        bucket.setdefault(mod, set()).add(item)

        wrapper.__wrapped__ = func
        wrapper.__name__ = func_name
        return wrapper

    originals = {}
    for func_name in dir(monkey):
        if not func_name.startswith("patch_") or func_name in _NOT_OPTION_FUNCS:
            continue
        func = getattr(monkey, func_name)
        if not callable(func):
            continue
        originals[func_name] = func
        setattr(monkey, func_name, make_wrapper(func_name, func))

    # Snapshot the attributes of every loaded module, so that changes gevent makes without
    # recording them in ``saved`` (plain setattr/delattr) are still seen.
    attrs_before = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not _is_audited_module(mod_name):
            continue
        try:
            attrs_before[mod_name] = dict(vars(mod))  # keeps the objects alive: ids stay valid
        except TypeError:
            pass
    saved_before = _saved_names(saved)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # gevent must not write on our stdout; the JSON is the only stdout output.
        real_stdout = sys.stdout
        sys.stdout = sys.stderr
        try:
            returned = monkey.patch_all()
        finally:
            sys.stdout = real_stdout
            for func_name, func in originals.items():
                setattr(monkey, func_name, func)

    result["patch_all_returned"] = returned
    result["call_order"] = call_order
    result["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]

    saved_after = _saved_names(saved)
    # Anything patch_all recorded that no wrapper saw (e.g. a future gevent that no longer looks
    # its patchers up as module globals) is still reported, under the caller's name.
    for mod, names in saved_after.items():
        for item in names - saved_before.get(mod, set()):
            if (mod, item) not in claimed:
                claimed.add((mod, item))
                by_option.setdefault("patch_all", {}).setdefault(mod, set()).add(item)

    # ``dns=`` has no patcher of its own (patch_socket applies it), but gevent says which socket
    # names it governs: report them under "dns" too, as well as under "socket".
    dns_names = set(getattr(sys.modules.get("gevent.socket"), "__dns__", ()) or ())
    socket_patched = set()
    for mods in by_option.values():
        socket_patched.update(mods.get("socket", ()))
    if "dns" in options and dns_names & socket_patched:
        by_option.setdefault("dns", {})["socket"] = dns_names & socket_patched

    result["by_option"] = {
        opt: {mod: sorted(names) for mod, names in sorted(mods.items())}
        for opt, mods in sorted(by_option.items())
    }

    replacements = {}
    removed = {}
    for mod_name, names in sorted(saved_after.items()):
        module = sys.modules.get(mod_name)
        if module is None:
            continue
        current = vars(module)
        gone = set(n for n in names if n not in current)
        gone.update(n for n in attrs_before.get(mod_name, ()) if n not in current)
        if gone:
            removed[mod_name] = sorted(gone)
        replacements[mod_name] = {n: _describe(current[n]) for n in sorted(names) if n in current}
    result["replacements"] = replacements
    result["removed"] = removed

    # Changes patch_all made that gevent.monkey.saved does not record, so get_original() and
    # is_object_patched() know nothing about them (e.g. threading._active_limbo_lock).
    unrecorded = {}
    for mod_name, before in sorted(attrs_before.items()):
        module = sys.modules.get(mod_name)
        if module is None:
            continue
        current = vars(module)
        recorded = saved_after.get(mod_name, set())
        for item, old in before.items():
            if item in recorded or (item.startswith("__") and item.endswith("__")):
                continue
            if item not in current:
                removed.setdefault(mod_name, []).append(item)
            elif current[item] is not old:
                described = _describe(current[item])
                # Only gevent objects: other changes are the stdlib's own caches being filled
                # while patching (e.g. platform._uname_cache), not patches.
                if described == "gevent" or described.startswith("gevent."):
                    unrecorded.setdefault(mod_name, {})[item] = described
    result["removed"] = {mod: sorted(set(names)) for mod, names in removed.items()}
    result["unrecorded"] = {mod: dict(sorted(items.items())) for mod, items in unrecorded.items()}
    return result


def main(argv, startup_modules):
    """Print the patch lists (or the error) as one JSON object; the exit code."""
    try:
        result = probe(startup_modules)
    except _ProbeError as exc:
        payload, code = {"error": str(exc), "error_kind": exc.kind}, 2
    except BaseException as exc:  # the contract is "always print JSON"
        payload = {"error": f"{type(exc).__name__}: {exc}", "error_kind": "exception"}
        code = 1
    else:
        payload, code = result, 0
    sys.stdout.write(json.dumps(payload, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()
    return code
