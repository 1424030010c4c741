"""The runtime audit behind `patchaudit TARGET`: a probe in a child process, then findings.

Names are imported on first use (PEP 562): the launcher alone (demo, the probe benchmark) does
not load the static engine that the audit runs beside the probe.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "AuditOptions",
    "AuditResult",
    "ProbeError",
    "RunOptions",
    "TargetError",
    "audit",
    "run_command",
]
_WHERE = {
    "AuditOptions": "._audit",
    "AuditResult": "._audit",
    "audit": "._audit",
    "ProbeError": "._launcher",
    "TargetError": "._target",
    "RunOptions": "._run",
    "run_command": "._run",
}

if TYPE_CHECKING:
    from ._audit import AuditOptions, AuditResult, audit
    from ._launcher import ProbeError
    from ._run import RunOptions, run_command
    from ._target import TargetError


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
