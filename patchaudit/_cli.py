"""The old home of the command line, kept so ``patchaudit._cli:main`` (installed entry-point
scripts, launchers) still works; the command line is :mod:`patchaudit.cli`."""

from .cli import main

__all__ = ["main"]
