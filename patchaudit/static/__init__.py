"""The static analyzer behind `patchaudit check`.

The engine is imported on first use (PEP 562), so importing one part of the package (the
summaries, the cache) does not load the whole engine and every rule with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["analyze", "check"]

if TYPE_CHECKING:
    from ._engine import analyze, check


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _engine

        return getattr(_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
