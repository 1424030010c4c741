"""The facts of a probe run now live in :mod:`patchaudit.model.facts`; kept for old imports."""

from ..model.facts import TARGET_IMPORTER, Facts, RuntimeContext

__all__ = ["TARGET_IMPORTER", "Facts", "RuntimeContext"]
