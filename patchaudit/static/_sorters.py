"""The import sorters a checked tree configures at its root, and whether they move imports
above code (MPA109).

What the sorters do with a module-level ``monkey.patch_all()`` followed by imports (isort
4.3.21 measured by hand; isort 5+ and ruff by ``tests/test_import_sorters.py``):

* isort 4 hoists every module-level import above the code before it: the patch ends up below.
* isort 5 and later sort each run of imports in place, unless ``float_to_top`` is set, which
  brings back the hoisting. ``# isort: split`` stops it; ``# isort: skip`` on the call does not.
* ruff's ``I`` rules sort runs of imports in place and never move one across code.

So only an isort whose settings float imports counts as moving them. The settings are read
where isort reads them, in its order (the first file with an isort section wins), and only at
the root, through :class:`._commands.Tree` (inside the root, regular files, at most ``limit``
bytes); nothing is run. A configuration this cannot read exactly (isort's ``skip`` lists, a
ruff ``extend``) is taken the way that reports less.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from ._commands import Tree
from ._packaging import _table, _toml, ini_items

__all__ = ["ImportSorters", "import_sorters"]

# Where isort reads its settings, in the order it looks (its CONFIG_SOURCES): file, TOML table
# or INI sections.
ISORT_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (".isort.cfg", ("settings", "isort")),
    ("pyproject.toml", ("tool.isort",)),
    ("setup.cfg", ("isort", "tool:isort")),
    ("tox.ini", ("isort", "tool:isort")),
)
# Where ruff reads its settings, in its order; the rule selection keys and what selects isort.
RUFF_SOURCES: tuple[tuple[str, str], ...] = (
    (".ruff.toml", ""),
    ("ruff.toml", ""),
    ("pyproject.toml", "tool.ruff"),
)
RUFF_SELECT_KEYS = ("select", "extend-select")
RUFF_ISORT_SELECTORS = frozenset({"I", "I0", "I00", "I001", "ALL"})
_SKIP_KEYS = ("skip", "extend_skip", "skip_glob", "extend_skip_glob")
_PRE_COMMIT = ".pre-commit-config.yaml"
_TRUE = ("true", "1", "yes", "on")


@dataclass(frozen=True)
class ImportSorters:
    """What sorts the tree's imports: ``isort`` and ``ruff`` name the file that configures each
    (``""``: none); ``floats`` is why isort moves imports above code (``""``: it does not)."""

    isort: str = ""
    ruff: str = ""
    floats: str = ""
    skip: tuple[str, ...] = ()  # isort's skip lists: folder/file names and globs

    def moves_imports(self, relpath: str) -> str:
        """Why the sorter moves this file's imports above code before them; ``""``: it
        does not (no floating isort, or the file is one isort skips)."""
        if not self.floats:
            return ""
        parts = relpath.split("/")
        for pattern in self.skip:
            if pattern in parts or fnmatch.fnmatch(relpath, pattern):
                return ""
            if any(fnmatch.fnmatch(part, pattern) for part in parts):
                return ""
        return self.floats


def import_sorters(root: Path, limit: int) -> ImportSorters:
    """The import sorters configured at ``root`` (see the module docstring)."""
    tree = Tree(root, limit)
    isort, floats, skip = _isort(tree)
    hook, hook_floats = _pre_commit(tree)
    return ImportSorters(
        isort=isort or hook,
        ruff=_ruff(tree),
        floats=hook_floats or floats,
        skip=skip,
    )


def _isort(tree: Tree) -> tuple[str, str, tuple[str, ...]]:
    """The file configuring isort, why it floats imports (``""``: it does not), its skips."""
    for rel, sections in ISORT_SOURCES:
        text = tree.read(rel)
        if text is None:
            continue
        settings: dict[str, object] = {}
        if rel.endswith(".toml"):
            tool = _table(_toml(text, rel, tree), "tool")
            if "isort" not in tool:
                continue
            settings, section = _table(tool, "isort"), sections[0]
        else:
            headers = re.findall(r"(?m)^\s*\[([^\]]+)\]", text)
            section = next((h.strip() for h in headers if h.strip() in sections), "")
            if not section:
                continue
            found = [item for item in ini_items(text) if item[0] == section]
            settings = {key: " ".join(v for _, v in values) for _, key, values in found}
        settings = {key.lstrip("-").replace("-", "_"): value for key, value in settings.items()}
        shown = f"{rel} [{section}]" if rel != ".isort.cfg" else rel
        value = settings.get("float_to_top")
        floats = value is True or (isinstance(value, str) and value.strip().lower() in _TRUE)
        skip: list[str] = []
        for key in _SKIP_KEYS:
            listed = settings.get(key)
            items = listed if isinstance(listed, list) else re.split(r"[,\s]+", str(listed or ""))
            skip += [str(item).strip().strip("/") for item in items if str(item).strip()]
        return shown, f"float_to_top in {shown}" if floats else "", tuple(skip)
    return "", "", ()


def _ruff(tree: Tree) -> str:
    """The file whose ruff settings select the isort rules (``""``: none does)."""
    for rel, table in RUFF_SOURCES:
        text = tree.read(rel)
        if text is None:
            continue
        data = _toml(text, rel, tree)
        for part in table.split(".") if table else ():
            data = _table(data, part)
        if not data and table:
            continue
        for settings in (data, _table(data, "lint")):
            for key in RUFF_SELECT_KEYS:
                listed = settings.get(key)
                if isinstance(listed, list) and RUFF_ISORT_SELECTORS & set(map(str, listed)):
                    return f"{rel} [{table or 'ruff'}]"
        return ""  # ruff uses the first file it finds, whatever it selects
    return ""


def _pre_commit(tree: Tree) -> tuple[str, str]:
    """A pre-commit isort hook: where it is, and why it floats imports (its ``rev`` is isort 4,
    or its ``args`` float them)."""
    text = tree.read(_PRE_COMMIT)
    if text is None:
        return "", ""
    for block in re.split(r"(?m)^\s*-\s*repo\s*:", text)[1:]:
        if not re.search(r"(?m)^\s*-?\s*id\s*:\s*['\"]?isort['\"]?\s*(#.*)?$", block):
            continue
        shown = f"{_PRE_COMMIT} (isort hook)"
        rev = re.search(r"(?m)^\s*rev\s*:\s*['\"]?v?(\d+)\.", block)
        if rev is not None and int(rev[1]) < 5:
            return shown, f"isort {rev[1]} in {_PRE_COMMIT}"
        if re.search(r"--float[-_]to[-_]top", block):
            return shown, f"--float-to-top in {_PRE_COMMIT}"
        return shown, ""
    return "", ""
