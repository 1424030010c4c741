"""The audit job (``--spec-file SPEC.json``): the modes, step by step, into the events file."""

import json
import os
import sys
import warnings

from . import _state
from ._errors import emit_error
from ._events import emit
from ._gunicorn import (
    fork,
    has_own_patch,
    load_config,
    load_worker_class,
    run_hook,
    worker_patch,
)
from ._libraries import libraries, owners
from ._machinery import EVENT_SCHEMA
from ._patches import close_event_patch, maybe_emit_settings
from ._process_wrappers import install_process_wrappers, install_sigterm_handler
from ._recorder import apply_loaded_hooks, install_recorder
from ._serving import serve
from ._stale import stale_scan
from ._state import S, leave_if_forked_child
from ._target import import_target, probe_patch_all, resolve_callable

MODES = ("as-is", "gunicorn", "gunicorn-preload", "uwsgi", "patch-first")


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

    startup = S.startup_modules
    emit(
        "start",
        executable=sys.executable,
        python_version=".".join(str(p) for p in sys.version_info[:3]),
        implementation=platform.python_implementation(),
        platform=sys.platform,
        pid=_state.PROBE_PID,
        gevent_version=_dist_version("gevent"),
        eventlet_version=_dist_version("eventlet"),
        mode=S.mode,
        target=S.spec.get("target"),
        startup_modules=startup,
        probe_modules=sorted(set(sys.modules) - set(startup)),
        schema=EVENT_SCHEMA,
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
    S.spec = spec
    S.mode = spec.get("mode") or "as-is"
    roots = []
    for root in spec.get("app_roots") or []:
        roots.append(os.path.join(os.path.abspath(root), ""))
    S.app_roots = tuple(roots)
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
    install_recorder()
    install_process_wrappers()
    install_sigterm_handler()
    apply_loaded_hooks()


def _guarded(step, func, *args):
    """Run one probe step; (True, result) or (False, None) after writing an error event."""
    close_event_patch()
    S.step = step
    try:
        result = func(*args)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from app code included
        leave_if_forked_child()
        emit_error(exc, step)
        return False, None
    leave_if_forked_child()
    return True, result


def _load():
    """Import the target and resolve its callable: (imported, app or None)."""
    imported, module = _guarded("import", import_target)
    if not imported:
        return False, None
    return True, _guarded("target", resolve_callable, module)[1]


def _hooks(names, app=None):
    """Run gunicorn's hooks ``names`` in order; False when one raised (the server stops)."""
    for name in names:
        if not _guarded("hook", run_hook, name, app)[0]:
            return False
    return True


def _run():
    mode = S.mode
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    # gunicorn's own steps, when its config is known: master (config file, hooks), then fork.
    server = S.spec.get("gunicorn") is not None and mode in ("gunicorn", "gunicorn-preload")
    if server and not (
        _guarded("config", load_config)[0] and _guarded("config", load_worker_class)[0]
    ):
        return
    loads_first = mode in ("gunicorn-preload", "uwsgi")
    imported, app = _load() if loads_first else (False, None)
    if server and (imported or not loads_first):  # a failed preload stops the master here
        if not _hooks(("on_starting", "when_ready", "pre_fork"), app):
            return
        fork()
        if not _hooks(("post_fork",), app):
            return
    if mode in ("gunicorn", "patch-first") or (loads_first and imported):
        # The server patches only once the app has loaded; a failed load never gets here.
        patch = worker_patch if server and has_own_patch() else probe_patch_all
        if not _guarded("patch", patch)[0]:
            return
    if not loads_first:
        imported, app = _load()
    if server and imported and not _hooks(("post_worker_init",), app):
        return
    # Even after a failed import the process is in some patched state worth describing.
    maybe_emit_settings()
    if mode != "patch-first":
        _guarded("owners", owners)
    _guarded("stale", stale_scan)
    if mode == "patch-first":
        return
    if app is not None:
        _guarded("serve", serve, app)
    _guarded("libraries", libraries)


def _audit(argv, startup_modules):
    spec_file = _read_args(argv)
    if not spec_file:
        sys.stderr.write("usage: __main__.py --spec-file SPEC.json | --patch-lists\n")
        return 2
    try:
        with open(spec_file, encoding="utf-8") as fh:
            spec = json.load(fh)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        S.fd = os.open(spec["events_path"], flags, 0o644)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"patchaudit probe: cannot read spec {spec_file}: {exc}\n")
        return 2
    S.startup_modules = startup_modules
    # The monitor thread patchaudit switches on warns when psutil is missing; that warning is
    # the audit's side effect, not the application's output.
    warnings.filterwarnings("ignore", message="Unable to monitor memory usage")
    try:
        _configure(spec)
        _emit_start()
        _install_hooks()
        _run()
    except BaseException as exc:
        leave_if_forked_child()
        emit_error(exc, S.step)
    leave_if_forked_child()
    emit("done", status="error" if S.errors else "ok", errors=S.errors, reason=None)
    return 1 if S.errors else 0


def main(argv, startup_modules):
    """Run the audit and end the process: never returns."""
    code = _audit(argv, startup_modules)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Exit without interpreter shutdown: app threads, atexit hooks and a patched threading
    # module must not be able to hang or crash the probe after its results are written.
    _state.real_exit(code)
