"""The static analyzer behind `patchaudit check`."""

from ._engine import analyze, check

__all__ = ["analyze", "check"]
