"""Applying fixes to one file's bytes: first come, first applied; an overlapping fix waits.

Two fixes whose edits touch the same span cannot both be applied against the same text, so the
later one is left for the next pass, which re-checks the edited file and computes it afresh.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from ._model import Edit, Fix


def _overlaps(edit: Edit, taken: list[Edit]) -> bool:
    for other in taken:
        if edit.start < other.end and other.start < edit.end:
            return True
        if edit.start == other.start and (edit.start == edit.end or other.start == other.end):
            return True  # two edits at one point: their order would be a guess
    return False


def apply_fixes(data: bytes, fixes: Iterable[Fix]) -> tuple[bytes, int]:
    """``data`` with every fix applied that does not overlap an earlier one, and how many were.

    The result is returned only if it still parses; otherwise ``data`` unchanged and 0, so a
    wrong edit can never leave a broken file behind.
    """
    taken: list[Edit] = []
    count = 0
    for fix in fixes:
        if not fix.edits or any(_overlaps(e, taken) for e in fix.edits):
            continue
        taken.extend(fix.edits)
        count += 1
    out = data
    for edit in sorted(taken, key=lambda e: (e.start, e.end), reverse=True):
        out = out[: edit.start] + edit.content.encode("utf-8") + out[edit.end :]
    try:
        ast.parse(out)
    except (SyntaxError, ValueError):
        return data, 0
    return out, count
