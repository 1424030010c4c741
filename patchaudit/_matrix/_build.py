"""The matrix as data: the installed gevent's patch lists joined with what patching leaves out."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .._gevent_patches import PatchLists

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMATS = ("table", "md", "json")
#: Where the generated Markdown lives, relative to the repository root.
DOCS_PATH = Path("docs") / "patch-matrix.md"
#: The command that regenerates :data:`DOCS_PATH` (run from the repository root).
REGENERATE = "python -m patchaudit._matrix"

_WIDTH = 100  # table width whenever the stream is not a terminal, so output is reproducible
_HEADER = re.compile(
    r"^Generated from gevent (?P<gevent>\S+) on (?P<implementation>\S+) (?P<python>\d+\.\d+) "
    r"\((?P<platform>[^)]*)\)",
    re.MULTILINE,
)
_ENTRY_KEYS = {"what", "use_instead", "note", "failure_mode", "rules"}


# --- data ------------------------------------------------------------------------------------


def load_not_covered() -> list[dict[str, Any]]:
    """The entries of ``data/not_covered.toml``, validated, in file order.

    Each is ``{what, use_instead: [str], note, failure_mode, rules: [str]}``; raises
    ``ValueError`` naming the entry when the file is malformed.
    """
    text = resources.files("patchaudit.data").joinpath("not_covered.toml").read_text("utf-8")
    raw = tomllib.loads(text).get("not_covered")
    if not isinstance(raw, list) or not raw:
        raise ValueError("not_covered.toml: expected a non-empty [[not_covered]] array")
    entries = []
    for number, item in enumerate(raw, start=1):
        where = f"not_covered.toml entry {number}"
        unknown = set(item) - _ENTRY_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("what", "failure_mode"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"{where}: `{key}` must be a non-empty string")
        for key in ("use_instead", "rules"):
            value = item.get(key)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}: `{key}` must be a list of strings")
        if not item["use_instead"]:
            raise ValueError(f"{where}: `use_instead` must not be empty")
        if not isinstance(item.get("note", ""), str):
            raise ValueError(f"{where}: `note` must be a string")
        entries.append(
            {
                "what": item["what"],
                "use_instead": list(item["use_instead"]),
                "note": item.get("note", ""),
                "failure_mode": item["failure_mode"],
                "rules": list(item["rules"]),
            }
        )
    return entries


def _pairs(lists: PatchLists, option: str) -> set[tuple[str, str]]:
    return {(mod, name) for mod, names in lists.by_option.get(option, {}).items() for name in names}


def _option_order(lists: PatchLists) -> list[str]:
    """``patch_all`` keywords in the order ``patch_all`` applied them, then the rest.

    ``call_order`` names functions (``patch_selectors`` belongs to ``select=``, found through
    the module it patched); an option whose names all appear under another (``dns`` within
    ``socket``) follows that option. Options that ran no patcher (``Event``, ``aggressive``,
    ``sys`` when false) come last, sorted, so the output never depends on dict order.
    """
    within = {opt: _within(lists, opt) for opt in lists.by_option}
    order: list[str] = []

    def add(opt: str) -> None:
        if opt in order:
            return
        order.append(opt)
        for other, parent in sorted(within.items()):
            if parent == opt:
                add(other)

    for func in lists.call_order:
        opt = func.removeprefix("patch_")
        if opt not in lists.by_option and opt not in lists.options:
            opt = next((o for o, mods in sorted(lists.by_option.items()) if opt in mods), "")
        if opt and within.get(opt) is None:
            add(opt)
    for opt in sorted({*lists.options, *lists.by_option}):
        add(within.get(opt) or opt)
        add(opt)
    return order


def _within(lists: PatchLists, option: str) -> str | None:
    """The option whose names strictly contain all of ``option``'s (``socket`` for ``dns``)."""
    mine = _pairs(lists, option)
    if not mine:
        return None
    parents = [o for o in lists.by_option if o != option and mine < _pairs(lists, o)]
    return min(parents, key=lambda o: (len(_pairs(lists, o)), o)) if parents else None


def _owners(lists: PatchLists, order: Sequence[str]) -> dict[tuple[str, str], str]:
    """(module, name) -> the most specific option listing it (``dns`` rather than ``socket``)."""
    owners: dict[tuple[str, str], str] = {}
    for opt in sorted(lists.by_option, key=lambda o: (len(_pairs(lists, o)), order.index(o))):
        for pair in _pairs(lists, opt):
            owners.setdefault(pair, opt)
    return owners


def build_matrix(lists: PatchLists) -> dict[str, Any]:
    """Everything ``patchaudit matrix`` shows, as a JSON-able dict.

    Keys: ``gevent_version``, ``python_version``, ``implementation``, ``platform``;
    ``options`` (one per ``patch_all`` keyword, in patch order: ``option``, ``default``, ``ran``
    (its patcher ran), ``within`` (the option it shares all its names with, or None),
    ``replaced``/``removed`` counts); ``patched`` (``option``, ``default``, ``module``, ``name``,
    ``replacement``: the ``module.qualname`` now in place, None if gevent did not say);
    ``removed`` (``option``, ``module``, ``name``); ``unrecorded`` (``module``, ``name``,
    ``replacement``: patched but absent from ``gevent.monkey.saved``); ``not_covered`` (the data
    file entries). Names are sorted by module and name within each option.
    """
    order = _option_order(lists)
    owners = _owners(lists, order)
    removed_pairs = {(mod, name) for mod, names in lists.removed.items() for name in names}
    rank = {opt: i for i, opt in enumerate(order)}

    def sort_key(pair: tuple[str, str]) -> tuple[int, str, str]:
        return (rank[owners[pair]], pair[0], pair[1])

    patched = []
    for mod, name in sorted(set(owners) - removed_pairs, key=sort_key):
        opt = owners[(mod, name)]
        patched.append(
            {
                "option": opt,
                "default": lists.options.get(opt),
                "module": mod,
                "name": name,
                "replacement": lists.replacements.get(mod, {}).get(name),
            }
        )
    removed = []
    for mod, name in sorted(removed_pairs, key=lambda p: (rank.get(owners.get(p, ""), -1), *p)):
        removed.append({"option": owners.get((mod, name)), "module": mod, "name": name})
    options = []
    for opt in order:
        mine = {p for p, owner in owners.items() if owner == opt}
        options.append(
            {
                "option": opt,
                "default": lists.options.get(opt),
                "ran": opt in lists.by_option,
                "within": _within(lists, opt),
                "replaced": len(mine - removed_pairs),
                "removed": len(mine & removed_pairs),
            }
        )
    unrecorded = [
        {"module": mod, "name": name, "replacement": items[name]}
        for mod, items in sorted(lists.unrecorded.items())
        for name in sorted(items)
    ]
    return {
        "gevent_version": lists.gevent_version,
        "python_version": lists.python_version,
        "implementation": lists.implementation or "Python",
        "platform": lists.platform,
        "options": options,
        "patched": patched,
        "removed": removed,
        "unrecorded": unrecorded,
        "not_covered": load_not_covered(),
    }
