"""patchaudit: find gevent/eventlet monkey-patching mistakes."""

from ._findings import Category, Finding, Report, Severity
from ._version import __version__

__all__ = ["Category", "Finding", "Report", "Severity", "__version__"]
