"""``patchaudit run``: record this interpreter (``patchaudit/probe/_run_job.py``), then run the
``sitecustomize`` this one hides, if there is one.

Put first on ``PYTHONPATH`` by ``patchaudit run``, so ``site`` imports it in every Python process
the command starts. Standard library only, old syntax; it imports nothing before taking the
``sys.modules`` snapshot, and it never raises: a recorder that cannot start leaves the program
as it was.
"""

import sys

_STARTUP_MODULES = sorted(sys.modules)

import os  # noqa: E402  (after the startup snapshot)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _record():
    boot = os.environ.get("PATCHAUDIT_RUN_PROBE")
    if not boot or not os.environ.get("PATCHAUDIT_RUN_DIR"):
        return
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_patchaudit_probe_boot", boot)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.load("_run_job").start(_STARTUP_MODULES)
    except Exception as exc:
        sys.stderr.write(f"patchaudit run: the recorder did not start here: {exc!r}\n")


def _chain():
    """The next ``sitecustomize`` on ``sys.path`` (a distribution's, a venv's), as ``site``
    would have imported it without this one."""
    import importlib.machinery
    import importlib.util

    path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)  # its errors are reported by site, as without us


_record()
_chain()
