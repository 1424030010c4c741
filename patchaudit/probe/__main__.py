"""Boot script of the probe, run by path: ``python .../probe/__main__.py --spec-file SPEC.json``
(the audit), ``... --patch-lists`` (what gevent's ``patch_all()`` replaces) or
``... --gunicorn-config [PATH]`` (the settings gunicorn would run with). Standard library
only, old syntax: it runs with the audited app's interpreter, which may be any Python gevent
supports, and imports nothing before the ``sys.modules`` snapshot.
"""

import sys

_STARTUP_MODULES = sorted(sys.modules)

import os  # noqa: E402  (after the startup snapshot)

_HERE = os.path.dirname(os.path.abspath(__file__))
PRIVATE_NAME = "_patchaudit_probe"  # also _machinery.PRIVATE_NAME


def load(job, name=PRIVATE_NAME):
    """A fresh copy of this folder's package as ``name`` (by path: app modules cannot shadow
    it); returns its module ``job``."""
    import importlib.util

    for stale in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[stale]
    init = os.path.join(_HERE, "__init__.py")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[_HERE])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(name + "." + job)


def _supervise():
    """Started by patchaudit (``_process.spawn``): fork the supervisor, go on as its child."""
    path = os.environ.get("PATCHAUDIT_SUPERVISE_SCRIPT")
    if not path:
        return
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_patchaudit_supervise", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # still contained by the launcher's process-group kill
        sys.stderr.write(f"patchaudit probe: cannot load the supervisor {path}: {exc}\n")
        return
    module.supervise()


if __name__ == "__main__":
    # Running by path puts this folder first on sys.path, where the probe's modules could
    # shadow the app's: drop it before anything else is imported.
    if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == _HERE:
        del sys.path[0]
    _supervise()
    _JOB = "_patch_lists" if "--patch-lists" in sys.argv[1:] else "_audit_job"
    if "--gunicorn-config" in sys.argv[1:]:
        _JOB = "_gunicorn_config"
    sys.exit(load(_JOB).main(sys.argv[1:], _STARTUP_MODULES))
