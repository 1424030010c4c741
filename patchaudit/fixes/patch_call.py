"""Fixes of `patch_all(...)` calls: MPA105 (positional arguments), MPA301 (options turned off)."""

from __future__ import annotations

import ast

from .._findings import Finding
from ._model import Applicability, Fix, Source
from ._registry import fixer, has_comment, node_at


def _parameter_names() -> list[str]:
    """``patch_all``'s keywords in signature order, read from the installed gevent."""
    from .._gevent_patches import PatchListError, load_patch_lists

    try:
        return list(load_patch_lists().positional)
    except PatchListError:
        return []


@fixer("MPA105")
def positional_to_keywords(source: Source, finding: Finding) -> Fix | None:
    call = node_at(source, finding, ast.Call)
    if not isinstance(call, ast.Call) or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    names = _parameter_names()
    given = {k.arg for k in call.keywords}
    if not call.args or len(call.args) > len(names) or given & set(names[: len(call.args)]):
        return None
    # `name=` in front of each argument: the values keep their exact text and comments
    edits = tuple(
        source.edit(source.start(a), source.start(a), f"{n}=")
        for a, n in zip(call.args, names, strict=False)
    )
    return Fix(Applicability.SAFE, "Pass the arguments as keywords", edits)


@fixer("MPA301")
def drop_disabled_options(source: Source, finding: Finding) -> Fix | None:
    call = node_at(source, finding, ast.Call)
    disabled = set(finding.evidence.get("disabled") or ())
    if not isinstance(call, ast.Call) or not disabled:
        return None
    arguments: list[ast.AST] = sorted(
        [*call.args, *call.keywords], key=lambda a: (a.lineno, a.col_offset)
    )
    dropped = [
        isinstance(a, ast.keyword)
        and a.arg in disabled
        and isinstance(a.value, ast.Constant)
        and a.value.value is False
        for a in arguments
    ]
    if not any(dropped):
        return None  # the options come from a dict elsewhere: nothing in this call to drop
    spans = _deletions(source, call, arguments, dropped)
    if any(has_comment(source, start, end) for start, end in spans):
        return None
    names = ", ".join(f"{a.arg}=False" for a, d in zip(arguments, dropped, strict=True) if d)  # type: ignore[attr-defined]
    edits = tuple(source.edit(start, end, "") for start, end in spans)
    return Fix(Applicability.UNSAFE, f"Drop `{names}` (patch everything)", edits)


def _deletions(
    source: Source, call: ast.Call, arguments: list[ast.AST], dropped: list[bool]
) -> list[tuple[int, int]]:
    """Byte spans that remove the dropped arguments with their commas, and only them."""
    if all(dropped):  # up to the closing parenthesis: a trailing comma goes too
        return [(source.start(arguments[0]), source.end(call) - 1)]
    last_kept = max(i for i, d in enumerate(dropped) if not d)
    spans = [
        (source.start(a), source.start(arguments[i + 1]))
        for i, a in enumerate(arguments[:last_kept])
        if dropped[i]
    ]
    if last_kept < len(arguments) - 1:  # a trailing run: from the end of the last one kept
        spans.append((source.end(arguments[last_kept]), source.end(arguments[-1])))
    return spans
