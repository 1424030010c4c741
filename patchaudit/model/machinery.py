"""What counts as the patching machinery, and which patch options matter.

Defined once, in the probe's own :mod:`patchaudit.probe._machinery` (stdlib-only, no imports,
because it is also loaded by path inside the audited process); the consumer side (rules, static
engine, runtime audit, pytest plugin) reads them through here.
"""

from __future__ import annotations

from ..probe._machinery import IMPORTANT_PATCH_OPTIONS, MACHINERY_PREFIXES

__all__ = ["IMPORTANT_PATCH_OPTIONS", "MACHINERY_PACKAGES", "is_machinery"]

#: Top-level packages whose own imports are the patching itself (gevent loads zope.interface and
#: greenlet while patching), never a problem of the application's import order. ``<patchaudit``
#: names the probe's own pseudo-modules.
MACHINERY_PACKAGES = frozenset(MACHINERY_PREFIXES)
_PROBE_PSEUDO = "<patchaudit"


def is_machinery(module: str | None) -> bool:
    """Whether ``module`` belongs to gevent, eventlet or what they load to patch."""
    if not module:
        return False
    return module.split(".")[0] in MACHINERY_PACKAGES or module.startswith(_PROBE_PSEUDO)
