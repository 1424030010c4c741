"""patchaudit: find gevent/eventlet monkey-patching mistakes before they hang production.

The public API is small: run the static analyzer with :func:`check` on paths and a
:class:`Config` from :func:`load_config`, get a :class:`Report` of :class:`Finding` objects, and
look rules up with :func:`get_rule` / :func:`all_rules`.

Names are imported on first use: the pytest plugin imports this package in every pytest run of
an environment where patchaudit is installed, so importing it must stay cheap.
"""

from importlib import import_module as _import_module

from ._version import __version__

_LAZY = {
    "all_rules": "patchaudit.rules",
    "Category": "patchaudit._findings",
    "check": "patchaudit.static",
    "Config": "patchaudit._config",
    "ConfigError": "patchaudit._config",
    "Finding": "patchaudit._findings",
    "get_rule": "patchaudit.rules",
    "load_config": "patchaudit._config",
    "Report": "patchaudit._findings",
    "Rule": "patchaudit.rules",
    "Severity": "patchaudit._findings",
}

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


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'patchaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
