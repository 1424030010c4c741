"""The runtime audit behind `patchaudit TARGET`: a probe in a child process, then findings."""

from ._audit import AuditOptions, AuditResult, audit
from ._launcher import ProbeError
from ._target import TargetError

__all__ = ["AuditOptions", "AuditResult", "ProbeError", "TargetError", "audit"]
