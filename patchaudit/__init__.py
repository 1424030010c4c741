"""patchaudit: find gevent/eventlet monkey-patching mistakes before they hang production.

The public API is small: run the static analyzer with :func:`check` on paths and a
:class:`Config` from :func:`load_config`, get a :class:`Report` of :class:`Finding` objects, and
look rules up with :func:`get_rule` / :func:`all_rules`.
"""

from ._config import Config, ConfigError, load_config
from ._findings import Category, Finding, Report, Severity
from ._version import __version__
from .rules import Rule, all_rules, get_rule
from .static import check

__all__ = [
    "__version__",
    "all_rules",
    "Category",
    "check",
    "Config",
    "ConfigError",
    "Finding",
    "get_rule",
    "load_config",
    "Report",
    "Rule",
    "Severity",
]
