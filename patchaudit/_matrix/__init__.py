"""`patchaudit matrix`: the simple list of what monkey-patching replaces and what it does not.

The replaced and removed names come from the *installed* gevent (:func:`load_patch_lists` runs
``patch_all()`` in a child interpreter), so the list is right for whatever gevent, Python and
platform the user has. The "not covered" list, which no introspection can produce, is the data
file ``patchaudit/data/not_covered.toml`` (sourced from the failure-mode knowledge base).

``python -m patchaudit._matrix`` regenerates ``docs/patch-matrix.md``; ``--check`` only reports
whether it is up to date.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .._console import EXIT_OK as _EXIT_OK
from .._console import EXIT_USAGE as _EXIT_USAGE
from .._gevent_patches import PatchListError, PatchLists, load_patch_lists
from ._build import _WIDTH, DOCS_PATH, FORMATS, REGENERATE, build_matrix, load_not_covered
from ._render import header_line, parse_header, render

__all__ = [
    "DOCS_PATH",
    "FORMATS",
    "REGENERATE",
    "build_matrix",
    "header_line",
    "load_not_covered",
    "main_matrix",
    "parse_header",
    "render",
    "write",
]

# --- entry points ----------------------------------------------------------------------------


def main_matrix(
    fmt: str,
    color: bool,
    stream: TextIO,
    *,
    python: str | None = None,
    cache_dir: Path | None = None,
) -> int:
    """``patchaudit matrix --format FMT``: write the matrix to ``stream``; return the exit code.

    ``color`` only matters for ``table`` (the caller decides: tty, ``--no-color``,
    ``NO_COLOR``; see ``_console.use_color``). ``markdown`` is accepted for ``md``.
    ``python`` picks the interpreter whose gevent is described (default: this one). Errors are
    one line on stderr and exit code 2.
    """
    from .._console import print_error, terminal_width
    from ..reporters._common import write_text

    fmt = "md" if fmt == "markdown" else fmt
    if fmt not in FORMATS:
        print_error(f"unknown format {fmt!r} ({', '.join(FORMATS)})")
        return _EXIT_USAGE
    try:
        matrix = build_matrix(load_patch_lists(python, cache_dir=cache_dir))
    except PatchListError as exc:
        print_error(exc)
        return _EXIT_USAGE
    width = terminal_width(stream, _WIDTH)  # only the table uses it
    encoding = getattr(stream, "encoding", None) or "utf-8"
    write_text(stream, render(matrix, fmt, color=color, width=width, encoding=encoding))
    return _EXIT_OK


def write(path: Path | str = DOCS_PATH, lists: PatchLists | None = None) -> Path:
    """Regenerate the Markdown document at ``path`` from the installed gevent; return the path."""
    target = Path(path)
    text = render(build_matrix(lists or load_patch_lists()), "md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m patchaudit._matrix",
        description=f"Regenerate {DOCS_PATH.as_posix()} from the installed gevent.",
    )
    parser.add_argument("path", nargs="?", type=Path, default=DOCS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    try:
        lists = load_patch_lists()
    except PatchListError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    if args.check:
        expected = render(build_matrix(lists), "md")
        try:
            current = args.path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != expected:
            print(f"{args.path} is out of date; run `{REGENERATE}`", file=sys.stderr)
            return 1
        return _EXIT_OK
    print(write(args.path, lists))
    return _EXIT_OK
