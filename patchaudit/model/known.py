"""The data tables in ``patchaudit/data``: known importers, on-import patchers, C libraries."""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path
from typing import Any

from .source import MODULE, PatchPoint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


_DATA = Path(__file__).resolve().parent.parent / "data"


@cache
def load_table(name: str) -> dict[str, Any]:
    # a path, not importlib.resources (7 ms of imports): the package is always installed as files
    text = (_DATA / name).read_text(encoding="utf-8")
    return tomllib.loads(text)


def known_importers() -> dict[str, list[str]]:
    """Package -> patched modules its import reaches, for packages that are not installed."""
    return {k: v["reaches"] for k, v in load_table("importers.toml")["importers"].items()}


def known_patchers() -> dict[str, dict[str, str]]:
    """Module -> {call, evidence} for packages that patch when imported (FM-08)."""
    return dict(load_table("importers.toml")["patchers"])


@cache
def known_patch_points() -> dict[str, PatchPoint]:
    """The patchers table as patch points, for replaying imports of packages not installed."""
    points = {}
    for module, entry in known_patchers().items():
        call = ast.parse(entry["call"], mode="eval").body
        assert isinstance(call, ast.Call)  # the table is ours; a test parses every entry
        function = ast.unparse(call.func)
        keywords = tuple(
            (k.arg, k.value.value if isinstance(k.value, ast.Constant) else "?")
            for k in call.keywords
            if k.arg is not None
        )
        framework = function.partition(".")[0]
        points[module] = PatchPoint(0, 0, framework, function, 0, keywords, MODULE, None)
    return points
