"""The gunicorn-config job (``--gunicorn-config [PATH]``): the settings gunicorn would run with.

The config file is executed the way gunicorn's master executes it, then ``GUNICORN_CMD_ARGS``
is applied over it (gunicorn's order: defaults, config file, that variable, the command line).
When gunicorn is importable in this interpreter its own ``Config`` does the work (validators,
``worker_class`` resolved to its class); otherwise a fallback follows gunicorn's rules for the
settings the audit uses. Without PATH the config is the one ``GUNICORN_CMD_ARGS`` names
(``-c``), else ``./gunicorn.conf.py`` when it exists.

Prints one JSON object on stdout and exits 0: ``gunicorn`` (its version, or null for the
fallback), ``config`` (the file executed, or null), ``preload_app``, ``worker_class``,
``gevent_worker`` (the class is gevent's worker or a subclass), ``worker_patch``
(``{"module", "qualname"}`` of a subclass with its own ``patch()``, else null), ``bind``
(list), ``hooks``
(``{name: {"file", "line"}}`` for the server hooks the config defines), ``env_args`` (the
split ``GUNICORN_CMD_ARGS``), ``master_modules`` (what importing gunicorn's command loads: in
its master they are loaded before the config runs, so before any patch) and ``settings``
(JSON-safe values, for the hooks' ``cfg``). On failure ``{"error": one line, "config" (the
file being executed, or null), "file", "line"}`` and exit 2. The config's own output goes to
stderr, so stdout holds only the answer.
"""

import json
import os
import shlex
import sys

from ._audit_job import _dist_version
from ._frames import is_probe_or_importlib
from ._gunicorn import HOOKS, exec_config
from ._state import real_exit

_GEVENT_NAMES = ("gevent", "gevent_wsgi", "gevent_pywsgi", "egg:gunicorn#gevent")
_GEVENT_CLASSES = ("GeventWorker", "GeventPyWSGIWorker")


class _ConfigError(Exception):
    pass


#: The config file being executed, so that an error can name it and the line that raised.
_EXECUTING = {"path": None}


def _first_line(exc):
    """gunicorn's messages may carry a whole traceback: the first line says what is wrong."""
    return (str(exc).strip().splitlines() or [""])[0].rstrip(": ")


def _raised_at(exc, path):
    """(file, line) where ``exc`` was raised: the innermost frame in the config file, else the
    innermost frame that is not the probe's or importlib's; a SyntaxError's own place."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno
    innermost = in_config = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        place = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        if not is_probe_or_importlib(place[0]):
            innermost = place
        if place[0] == path:
            in_config = place
        tb = tb.tb_next
    return in_config if in_config[0] else innermost


def _namespace(location):
    """(file, vars) of the config at ``location`` (``file:``/``python:`` forms as gunicorn)."""
    if location.startswith("python:"):
        import importlib

        _EXECUTING["path"] = location
        module = importlib.import_module(location[len("python:") :])
        return getattr(module, "__file__", None), vars(module)
    path = location[len("file:") :] if location.startswith("file:") else location
    _EXECUTING["path"] = os.path.abspath(path)
    if not os.path.exists(path):
        raise _ConfigError(f"{path!r} doesn't exist")
    return os.path.abspath(path), vars(exec_config(os.path.abspath(path)))


def _hooks(namespace):
    out = {}
    for name in HOOKS:
        code = getattr(namespace.get(name), "__code__", None)
        if code is not None:
            out[name] = {"file": code.co_filename, "line": code.co_firstlineno}
    return out


def _safe(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _with_gunicorn(location, env_argv):
    from gunicorn.config import Config, get_default_config_file

    cfg = Config()
    parser = cfg.parser()
    try:
        env = parser.parse_args(env_argv)
    except SystemExit:
        raise _ConfigError(
            f"gunicorn cannot parse GUNICORN_CMD_ARGS={' '.join(env_argv)!r}"
        ) from None
    location = location or env.config or get_default_config_file()
    path, namespace = _namespace(location) if location else (None, {})
    for key, value in list(namespace.items()):
        if key in cfg.settings:
            try:
                cfg.set(key.lower(), value)
            except Exception as exc:
                raise _ConfigError(
                    f"invalid value for {key}: {value!r} ({_first_line(exc)})"
                ) from None
    for key, value in vars(env).items():
        if value is not None and key != "args":
            cfg.set(key.lower(), value)
    gevent_worker, custom = False, None
    loaded = set(sys.modules)
    try:  # gunicorn's gevent worker module, which the master imports after the config
        import gunicorn.workers.ggevent  # noqa: F401
    except ImportError:  # gevent is not installed
        pass
    ours = set(sys.modules) - loaded  # a custom worker module's own imports are the app's
    try:
        worker = cfg.worker_class  # the master loads the class right after the config
    except Exception as exc:  # gunicorn's master stops on this too
        raise _ConfigError(
            f"worker_class {cfg.worker_class_str!r} cannot be loaded: {_first_line(exc)}"
        ) from None
    try:
        from gunicorn.workers.ggevent import GeventWorker

        gevent_worker = isinstance(worker, type) and issubclass(worker, GeventWorker)
        if gevent_worker and worker.patch is not GeventWorker.patch:
            # its own patch() (grpc's init_gevent() after super().patch(), say) is what runs
            custom = {"module": worker.__module__, "qualname": worker.__qualname__}
    except ImportError:  # gevent is not installed: no gevent worker either
        pass
    settings = {}
    for name, setting in cfg.settings.items():
        value = setting.get()
        if _safe(value):
            settings[name] = value
    return {
        "gunicorn": _dist_version("gunicorn"),
        "config": path,
        "preload_app": bool(cfg.preload_app),
        "worker_class": cfg.worker_class_str,
        "worker_patch": custom,
        "worker_modules": sorted(ours),
        "gevent_worker": gevent_worker,
        "bind": list(cfg.bind),
        "hooks": _hooks(namespace),
        "settings": settings,
    }


def _bool(value):
    """gunicorn's validate_bool."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, str) and value.lower().strip() in ("true", "false"):
        return value.lower().strip() == "true"
    raise _ConfigError(f"invalid value for preload_app: {value!r} (not a boolean)")


def _env_options(env_argv):
    """The options of ``GUNICORN_CMD_ARGS`` the fallback needs, parsed as argparse would."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-c", "--config")
    parser.add_argument("-k", "--worker-class", dest="worker_class")
    parser.add_argument("-b", "--bind", action="append")
    parser.add_argument("--preload", dest="preload_app", action="store_true", default=None)
    known, _ = parser.parse_known_args(env_argv)
    return known


def _fallback(location, env_argv):
    env = _env_options(env_argv)
    location = location or env.config
    if not location and os.path.exists("gunicorn.conf.py"):
        location = "gunicorn.conf.py"
    path, namespace = _namespace(location) if location else (None, {})
    preload = _bool(namespace.get("preload_app", False))
    if env.preload_app:
        preload = True
    worker = env.worker_class or namespace.get("worker_class", "sync")
    bind = env.bind or namespace.get("bind")
    if bind is None:
        port = os.environ.get("PORT")
        bind = [f"0.0.0.0:{port}"] if port else ["127.0.0.1:8000"]
    elif isinstance(bind, str):
        bind = [bind]
    if isinstance(worker, str):
        name = worker
        gevent_worker = worker in _GEVENT_NAMES or worker.rsplit(".", 1)[-1] in _GEVENT_CLASSES
    else:
        name = "{}.{}".format(getattr(worker, "__module__", "?"), getattr(worker, "__name__", "?"))
        gevent_worker = any(k.__name__ in _GEVENT_CLASSES for k in getattr(worker, "__mro__", ()))
    settings = dict(
        (k, v) for k, v in namespace.items() if k.islower() and not k.startswith("_") and _safe(v)
    )
    settings.update(preload_app=preload, worker_class=name, bind=list(bind))
    return {
        "gunicorn": None,
        "worker_patch": None,
        "config": path,
        "preload_app": preload,
        "worker_class": name,
        "gevent_worker": gevent_worker,
        "bind": list(bind),
        "hooks": _hooks(namespace),
        "settings": settings,
    }


def evaluate(location):
    env_argv = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # gunicorn's chdir setting: the worker class is found there
    before = set(sys.modules)
    try:
        import gunicorn.app.wsgiapp  # noqa: F401  (what `gunicorn` imports before the config)
    except ImportError:
        result = _fallback(location, env_argv)
        result["master_modules"] = []
    else:
        master = set(sys.modules) - before
        result = _with_gunicorn(location, env_argv)
        # loaded by the worker class, which the master imports after the config
        result["master_modules"] = sorted(master.union(result.pop("worker_modules")))
    result["env_args"] = env_argv
    return result


def _error(exc):
    path = _EXECUTING["path"]
    if isinstance(exc, _ConfigError):
        return {"error": str(exc), "config": path, "file": None, "line": None}
    file, line = _raised_at(exc, path)
    message = _first_line(exc)
    if isinstance(exc, SyntaxError):
        message = exc.msg
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return {"error": text, "config": path, "file": file, "line": line}


def main(argv, startup_modules):
    """Print the settings (or the error) as one JSON object and end the process (threads the
    config started must not keep it alive): never returns."""
    location = None
    if "--gunicorn-config" in argv:
        rest = argv[argv.index("--gunicorn-config") + 1 :]
        location = rest[0] if rest and rest[0] else None
    stdout = os.dup(1)
    os.dup2(2, 1)  # what the config prints must not mix with the answer
    try:
        payload, code = evaluate(location), 0
    except BaseException as exc:  # SystemExit from the config included
        payload, code = _error(exc), 2
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)
    sys.stdout.write(json.dumps(payload, sort_keys=True, default=repr) + "\n")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    real_exit(code)
