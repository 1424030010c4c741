"""Temporary folders that go away on every way out of a command.

When the block ends; on the second signal (:mod:`patchaudit._process` calls :func:`remove_all`);
by the supervisors of children spawned while the folder exists, if this process is killed with
SIGKILL (spawn hands them :func:`live`); and, should all of that fail (killed before any child
ran), by the next run, which removes folders whose process is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["forget_all", "live", "remove_all", "scratch_dir"]

_PREFIX = "patchaudit-run-"
_LIVE: set[str] = set()


def live() -> list[str]:
    """The folders of this process's open :func:`scratch_dir` blocks."""
    return sorted(_LIVE)


def remove_all() -> None:
    """Remove every open :func:`scratch_dir` folder now (an interrupted command's cleanup)."""
    for path in list(_LIVE):
        shutil.rmtree(path, ignore_errors=True)
        _LIVE.discard(path)


def forget_all() -> None:
    """In a forked child: the parent's folders are not ours to remove."""
    _LIVE.clear()


@contextmanager
def scratch_dir(label: str = "") -> Iterator[Path]:
    """A temporary folder removed on every way out (see the module docstring).

    Its name (``patchaudit-run-NAMESPACE-PID-[LABEL-]XXXX`` in the temporary folder) carries
    this process's pid and pid namespace, so the next run can tell a leftover of a dead run
    from the folder of a live one and remove it.
    """
    _sweep_dead_runs()
    tail = f"{label}-" if label else ""
    path = tempfile.mkdtemp(prefix=f"{_PREFIX}{_namespace()}-{os.getpid()}-{tail}")
    _LIVE.add(path)
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
        _LIVE.discard(path)


def _namespace() -> str:
    """This process's pid namespace: a pid means nothing across namespaces (containers)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _sweep_dead_runs() -> None:
    """Remove scratch folders left by runs of ours that died by SIGKILL before any child ran."""
    root = tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return
    namespace, uid = _namespace(), os.getuid()
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        parts = name[len(_PREFIX) :].split("-")
        if len(parts) < 3 or parts[0] != namespace or not parts[1].isdigit():
            continue
        path = os.path.join(root, name)
        try:
            if os.lstat(path).st_uid != uid or not _pid_gone(int(parts[1])):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
