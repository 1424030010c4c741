"""The target: imported the way its server would, its WSGI callable resolved, the mode's patch."""

import importlib
import importlib.util
import os
import sys

from ._events import emit
from ._patches import maybe_emit_settings
from ._recorder import apply_loaded_hooks, record_file_import
from ._state import S, leave_if_forked_child


def import_target():
    target = S.spec.get("target") or {}
    kind = target.get("kind", "module")
    S.importing_target = True
    try:
        if kind == "file":
            path = target.get("file")
            name = target.get("module") or os.path.splitext(os.path.basename(path))[0]
            record_file_import(name, path, "<target>", found=os.path.exists(path))
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
        S.importing_target = False
    apply_loaded_hooks()
    maybe_emit_settings()
    return module


def resolve_callable(module):
    """Find the WSGI callable as the server would; emits the ``target`` event."""
    target = S.spec.get("target") or {}
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
            leave_if_forked_child()
            fields["reason"] = f"factory `{name}()` raised {type(exc).__name__}: {exc}"
            emit("target", **fields)
            raise
        leave_if_forked_child()
    if obj is not None:
        if callable(obj):
            fields["wsgi"] = True
        else:
            fields["reason"] = f"`{name}` is not callable ({type(obj).__name__})"
            obj = None
    emit("target", **fields)
    apply_loaded_hooks()
    return obj


def probe_patch_all() -> None:
    """Patch the way the mode's server does, marked as the probe's doing."""
    import gevent.monkey

    apply_loaded_hooks()
    S.probe_patch_label = f"<patchaudit:{S.mode}>"
    try:
        gevent.monkey.patch_all()
    finally:
        S.probe_patch_label = None
    maybe_emit_settings()
