"""`patchaudit check -`: source read from stdin, checked as the file ``--stdin-filename`` names.

It is discovered like a named file (excludes, the project root, its module name), but the path
need not exist: an editor's new buffer has none yet. Its bytes are read from a holder file (a
scratch copy of stdin), the way a symlink's are read from the file it names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ._discover import SourceFile, _Walker


def discover_stdin(
    name: Path,
    holder: Path,
    *,
    exclude: Sequence[str],
    root: Path,
    cwd: Path,
    respect_gitignore: bool = True,
) -> tuple[list[SourceFile], list[str]]:
    """What :func:`~._discover.discover` gives for the file ``name``, read from ``holder``."""
    walker = _Walker(exclude, root, cwd, respect_gitignore)
    full = os.path.normpath(os.path.join(walker.cwd, os.fspath(name)))
    if walker.root_relative(full) is None:
        walker.problem(full, f"outside the project root {walker.root}", is_dir=False)
    elif not walker.excluded_with_parents(full, is_dir=False):
        walker.files[full] = os.path.split(full)
        walker.targets[full] = os.fspath(holder)
    return walker.results()
