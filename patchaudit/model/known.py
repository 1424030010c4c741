"""The data tables in ``patchaudit/data``: known importers, on-import patchers, C libraries."""

from __future__ import annotations

import sys
from functools import cache
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@cache
def load_table(name: str) -> dict[str, Any]:
    text = resources.files("patchaudit.data").joinpath(name).read_text(encoding="utf-8")
    return tomllib.loads(text)


def known_importers() -> dict[str, list[str]]:
    """Package -> patched modules its import reaches, for packages that are not installed."""
    return {k: v["reaches"] for k, v in load_table("importers.toml")["importers"].items()}


def known_patchers() -> dict[str, dict[str, str]]:
    """Module -> {call, evidence} for packages that patch when imported (FM-08)."""
    return dict(load_table("importers.toml")["patchers"])
