"""The command line: ``patchaudit`` and its commands, one module each.

``_parser`` holds the top-level parser and the command table, ``_main`` the run and its exit
codes; :mod:`patchaudit._console` (a leaf below every layer) what every command shares (colour,
width, ``--output``, the one-line error).
Each command module (``check``, ``audit``, ``run``, ``rules``, ``matrix``, ``doctor``, ``bench``,
``demo``) has ``HELP``, ``add_arguments(parser)`` and ``run(args)``.

:func:`main` is imported lazily, so importing this package builds no parser.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from ._main import main as run

    return run(argv)
