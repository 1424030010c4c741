"""The static analyzer behind `patchaudit check`."""

from ._engine import check

__all__ = ["check"]
