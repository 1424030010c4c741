"""MPA109: an import sorter the tree configures would move imports above the patch call.

The file check finds the module-level patch call and the module-level imports after it that
isort would move (no `# isort: split` between, no `# isort: skip` on them, the file not skipped
or turned off); whether the tree's sorter moves imports above code at all is project data
(``patchaudit.static._sorters``), asked by ``applies``.
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Iterator

from .._findings import Category, Severity
from ..model.source import MODULE, FileContext
from ._helpers import call_statement
from ._model import Hit, rule

_SPLIT = re.compile(r"#\s*isort\s*:\s*split")
_SKIP = re.compile(r"#\s*isort\s*:\s*skip(?!_file)\b")
# the whole file, or a region, that isort leaves alone: no claim about what it would do
_UNTOUCHED = re.compile(r"isort\s*:\s*(skip_file|off)")


def _sorter_moves(project, hit: Hit) -> bool:
    """The tree configures an isort that moves imports above code, and it sorts this file."""
    relpath = posixpath.relpath(hit.path, project.root_prefix or ".")
    sorters = project.import_sorters
    why = sorters.moves_imports(relpath)
    if why:
        hit.args["why"] = why
        configured = [source for source in (sorters.isort, sorters.ruff) if source]
        hit.evidence.update(sorter=why, configured=configured)
    return bool(why)


@rule(
    code="MPA109",
    name="import-sorter-moves-imports-above-patch",
    category=Category.PATCH_ORDER,
    severity=Severity.WARNING,
    summary="The tree's isort settings would move imports above the patch call",
    message="isort would move the imports on lines {lines} above `{call}()` ({why})",
    why="""
The patch call is in the right place today, but the import sorter the project runs would move
the imports below it above it, and the next `isort .` or pre-commit run silently turns a
correct entry point into one that loads `ssl`, `socket` and `threading` before patching
(FM-01, FM-03). isort 4 hoists every module-level import above the code before it; isort 5 and
later do it when `float_to_top` is set. A formatter that fixes E402 by hoisting imports does
the same (wistful/SublimeAutoPEP8#64). isort keeps everything after a `# isort: split` line in
place; `# isort: skip` on the call does not stop the imports below it from floating. Reported
only when the settings at the project root float imports and the file is one isort sorts;
ruff's `I` rules never move an import across code, so they are not a reason on their own.
""",
    fix="Add a `# isort: split` line right after the patch call (`--fix` does). ruff's E402 "
    "on the imports below is unchanged by it; silence that in "
    "`[tool.ruff.lint.per-file-ignores]` for this file.",
    bad="""
# pyproject.toml: [tool.isort] float_to_top = true
from gevent import monkey
monkey.patch_all()
import requests
""",
    good="""
from gevent import monkey
monkey.patch_all()
# isort: split
import requests
""",
    references=("FM-03", "FM-01", "wistful/SublimeAutoPEP8#64"),
    triggers=(b"patch_", b"monkey_patch"),
    applies=_sorter_moves,
)
def check_sorter_moves_imports(ctx: FileContext) -> Iterator[Hit]:
    if _UNTOUCHED.search(ctx.source):
        return
    lines = ctx.source.splitlines()
    for point in ctx.patch_points:
        statement = call_statement(ctx.tree, point.line, point.column)
        if point.context != MODULE or statement is None:
            continue
        after = statement.end_lineno or statement.lineno
        moved = []
        for node in ctx.tree.body:
            if node.lineno <= after or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if any(_SPLIT.search(line) for line in lines[statement.lineno - 1 : node.lineno - 1]):
                break  # isort sorts what follows a split on its own, below it
            if not any(_SKIP.search(line) for line in lines[node.lineno - 1 : node.end_lineno]):
                moved.append(node.lineno)
        if moved:
            shown = ", ".join(str(n) for n in moved[:5]) + (", ..." if len(moved) > 5 else "")
            yield Hit(
                line=point.line,
                column=point.column,
                args={"call": point.function.rsplit(".", 1)[-1], "lines": shown},
                evidence={"imports": moved},
            )
        return  # the first module-level patch call is the one that must stay first
