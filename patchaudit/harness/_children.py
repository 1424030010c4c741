"""How the harness starts its children, and the one folder their temporary files go to.

Every process `patchaudit bench` starts is started through :func:`patchaudit._process.spawn`
(servers, load workers, and ab/wrk through :func:`patchaudit._exec.exec_command`), so each
runs under a supervisor that ends its whole tree when bench ends, however bench ends. This module
adds what the harness needs on top of that:

* :func:`python_command`: our interpreter running a harness script or module in **safe-path**
  mode, so neither the current directory nor the script's folder is put first on ``sys.path``
  (a ``json.py`` in the directory bench was started from is never imported by a child).
* :func:`scratch_folder`: the one temporary folder of a command (a
  :func:`patchaudit._scratch.scratch_dir`, removed on every exit path, ``kill -9`` included),
  made the temporary folder of the command and of all its children.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._scratch import scratch_dir

# Python 3.10 has no -P. -I would also drop PYTHONPATH and the user site, which the app under
# test and the harness extra may need, so there the child runs `-c`, which puts only '' (the
# current directory) first on sys.path, and the bootstrap removes it before running anything.
_BOOT_SCRIPT = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n    del sys.path[0]\n"
    "sys.argv.pop(0)\n"
    "__file__ = sys.argv[0]\n"
    "with open(__file__, 'rb') as _f:\n    _code = compile(_f.read(), __file__, 'exec')\n"
    "del _f\n"
    "exec(_code)\n"
)
_BOOT_MODULE = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n    del sys.path[0]\n"
    "import runpy\n"
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
)


def python_command(*, script: Path | None = None, module: str | None = None) -> list[str]:
    """``sys.executable`` running ``script`` (by path) or ``module`` (like ``-m``), safe-path."""
    return _safe_path_command(sys.executable, sys.version_info >= (3, 11), script, module)


def _safe_path_command(
    python: str, has_safe_path: bool, script: Path | None, module: str | None
) -> list[str]:
    if (script is None) == (module is None):
        raise ValueError("give exactly one of script and module")
    if has_safe_path:
        return [python, "-P", str(script)] if script is not None else [python, "-P", "-m", module]
    if script is not None:
        return [python, "-c", _BOOT_SCRIPT, str(script)]
    return [python, "-c", _BOOT_MODULE, str(module)]


@contextmanager
def scratch_folder(label: str) -> Iterator[Path]:
    """A :func:`patchaudit._scratch.scratch_dir` that every temporary file of the command uses.

    While the block runs, ``TMPDIR`` and :data:`tempfile.tempdir` point at it, so our own
    temporary files (wrk's script) and those of every child (gunicorn's worker files, the app's
    own) land there and go with it: when the block ends however it ends, on a second signal,
    and, if this process is killed with SIGKILL, through the supervisors of its children.
    """
    with scratch_dir(label) as folder:
        saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
        os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
        try:
            yield folder
        finally:
            tempfile.tempdir = saved_tempdir
            if saved_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved_env
