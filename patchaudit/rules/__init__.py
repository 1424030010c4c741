"""The rule catalogue. Importing this package registers every rule in ``REGISTRY``.

Codes are ``MPA`` + three digits, grouped by family: 0xx source problems, 1xx patch order,
2xx stale references, 30x partial patching, 35x libraries that patch, 4xx eventlet, 50x
signals, 55x queues and multiprocessing, 6xx fork, 7xx incompatible libraries, 8xx blocking
calls. Rules numbered x5x and above in a family are runtime rules; each rule names the runners
that execute it (:class:`Runner`).

Runtime checks import the event classes (:mod:`patchaudit.model.events`) inside their bodies:
every ``patchaudit check`` imports this package, and a pre-commit hook pays for each module
loaded at start-up on every commit.
"""

from . import (  # noqa: F401  (imported for their @rule registrations)
    blocking,
    eventlet,
    fork,
    hangs,
    import_sorters,
    launchers,
    libraries,
    patch_calls,
    patch_order,
    plugin,
    queues,
    runtime_order,
    signals,
    source,
    stale_reference,
    stale_runtime,
)
from ._model import REGISTRY, RUNTIME, Hit, Rule, Runner, Scope

__all__ = ["REGISTRY", "RUNTIME", "Hit", "Rule", "Runner", "Scope", "all_rules", "get_rule"]


def all_rules() -> list[Rule]:
    return [REGISTRY[code] for code in sorted(REGISTRY)]


def get_rule(code: str) -> Rule | None:
    return REGISTRY.get(code.upper())
