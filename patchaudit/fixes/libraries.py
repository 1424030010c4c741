"""Fixes of library findings: MPA704 (pyzmq becomes `zmq.green`), MPA701 (register psycogreen).

MPA704 is safe only where the module uses nothing but what `zmq.green` provides: the names the
installed pyzmq's ``zmq/green/__init__.py`` binds itself (read by parsing it) and the ones it
re-exports with ``from zmq import *`` (that module's ``__all__``, read in a child process, since
pyzmq builds it at import). Anything else (``zmq.asyncio``, ``zmq`` passed as a value, rebound,
pyzmq not installed) makes the fix display-only.
"""

from __future__ import annotations

import ast
import importlib.machinery
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from .._findings import Finding
from .._safeio import read_regular
from ._model import Applicability, Edit, Fix, Source
from ._registry import fixer, node_at
from .stale_import import _bindings

__all__ = ["green_namespace", "green_zmq", "register_psycogreen"]

# -- what zmq.green provides -------------------------------------------------------------------

#: Prints the ``from M import *`` names of each module given (``__all__``, else the public
#: names), in ``-I`` mode with only the folder pyzmq was found in added: nothing of the checked
#: tree (the current directory) can be imported.
_STAR_NAMES = """\
import importlib, json, sys
if sys.argv[1] not in sys.path:
    sys.path.append(sys.argv[1])
out = {}
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    out[name] = sorted(set(names))
print(json.dumps(out))
"""
_TIMEOUT = 30.0
_memo: dict[tuple[str, int], frozenset[str] | None] = {}
_memo_lock = threading.Lock()


def _installed_paths() -> list[str]:
    """Where this interpreter finds installed packages: its ``sys.path`` without the current
    directory, which ``python -m patchaudit`` puts there and which is the checked tree when
    run from it (a ``zmq`` there must never be imported)."""
    here = os.path.realpath(os.getcwd())
    return [p for p in sys.path if p and os.path.isdir(p) and os.path.realpath(p) != here]


def _green_source() -> Path | None:
    """``zmq/green/__init__.py`` of the installed pyzmq, found without importing anything
    (``find_spec`` of a top-level name runs no code of the package)."""
    try:
        spec = importlib.machinery.PathFinder.find_spec("zmq", _installed_paths())
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0], "green", "__init__.py") if locations else None


def _own_names(tree: ast.Module) -> tuple[set[str], list[str]]:
    """The public names a module binds at its top level, and the modules it star-imports."""
    names: set[str] = set()
    stars: list[str] = []
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom):
            if statement.module == "__future__":
                continue
            if any(a.name == "*" for a in statement.names):
                if statement.level or not statement.module:
                    raise ValueError("a relative star import")  # rare enough: no fix then
                stars.append(statement.module)
            else:
                names.update(a.asname or a.name for a in statement.names)
        elif isinstance(statement, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in statement.names)
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(statement.name)
    return {n for n in names if not n.startswith("_")}, stars


def _star_names(folder: str, modules: list[str]) -> dict[str, list[str]] | None:
    """Run :data:`_STAR_NAMES` supervised (it dies with us, at the deadline at the latest)."""
    from .. import _process
    from .._exec import exec_command

    argv = exec_command([sys.executable, "-I", "-c", _STAR_NAMES, folder, *modules])
    try:
        returncode, out, _ = _process.capture(argv, stderr=False, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if returncode != 0:
        return None
    try:
        data = json.loads(out)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _read_namespace(path: Path) -> frozenset[str] | None:
    try:
        own, stars = _own_names(ast.parse(read_regular(path, 1024 * 1024)))
    except (OSError, ValueError, SyntaxError):
        return None
    # `zmq` sits in the folder above `zmq/green/`: the child imports the same pyzmq
    star = _star_names(str(path.parent.parent.parent), stars) if stars else {}
    if star is None or not all(isinstance(star.get(m), list) for m in stars):
        return None
    return frozenset(own.union(*(star[m] for m in stars)))


def green_namespace() -> frozenset[str] | None:
    """Every ``X`` for which the installed ``zmq.green.X`` exists, or None when pyzmq is not
    installed or its ``zmq.green`` cannot be read. Memoised per version of that file."""
    path = _green_source()
    try:
        key = (str(path), os.stat(path).st_mtime_ns) if path is not None else None
    except OSError:
        key = None
    if path is None or key is None:
        return None
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    found = _read_namespace(path)
    with _memo_lock:
        _memo[key] = found
    return found


# -- MPA704 ------------------------------------------------------------------------------------

# `from zmq import`: where the module name is, so only those three bytes are rewritten
_FROM_ZMQ = re.compile(rb"from(?:[ \t\f]|\\\r?\n)+(zmq)(?=[ \t\f\\])")


def _attribute_uses_covered(
    tree: ast.Module, name: str, alias: ast.alias, names: frozenset[str]
) -> bool:
    """Whether ``name`` means pyzmq everywhere and is only ever read as ``name.X`` with ``X``
    in ``names``: then `zmq.green` bound to it gives every use what it had."""
    for binding in _bindings(tree, name, strings=False):
        if binding is alias or (
            isinstance(binding, ast.alias)
            and (
                (binding.name == "zmq" and (binding.asname or "zmq") == name)
                or (binding.name == "zmq.green" and binding.asname == name)
            )
        ):
            continue  # another `import zmq`: fixed in the next pass
        return False
    attributes = {
        id(n.value): n
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == name:
            use = attributes.get(id(node))
            if use is None or not isinstance(use.ctx, ast.Load) or use.attr not in names:
                return False  # passed around, assigned to, or a name green lacks
    return True


def _import_fix(source: Source, statement: ast.Import) -> Fix | None:
    alias = next((a for a in statement.names if a.name == "zmq"), None)
    if alias is None:  # `import zmq.devices`: the name is a submodule, not what green replaces
        return None
    bound = alias.asname or "zmq"
    namespace = green_namespace()
    covered = namespace is not None and _attribute_uses_covered(
        source.tree, bound, alias, namespace
    )
    edit = source.edit(source.start(alias), source.end(alias), f"zmq.green as {bound}")
    return Fix(
        Applicability.SAFE if covered else Applicability.DISPLAY_ONLY,
        f"Import `zmq.green as {bound}`",
        (edit,),
    )


def _from_import_fix(source: Source, statement: ast.ImportFrom) -> Fix | None:
    if statement.level or statement.module != "zmq":
        return None
    found = _FROM_ZMQ.match(source.data, source.start(statement))
    if found is None:
        return None
    namespace = green_namespace()
    covered = namespace is not None and all(a.name in namespace for a in statement.names)
    edit = source.edit(found.start(1), found.end(1), "zmq.green")
    return Fix(
        Applicability.SAFE if covered else Applicability.DISPLAY_ONLY,
        "Import the names from `zmq.green`",
        (edit,),
    )


@fixer("MPA704")
def green_zmq(source: Source, finding: Finding) -> Fix | None:
    """``import zmq`` -> ``import zmq.green as zmq``; ``from zmq import`` -> ``from zmq.green``."""
    statement = node_at(source, finding, ast.Import)
    if isinstance(statement, ast.Import):
        return _import_fix(source, statement)
    statement = node_at(source, finding, ast.ImportFrom)
    if isinstance(statement, ast.ImportFrom):
        return _from_import_fix(source, statement)
    return None


# -- MPA701 ------------------------------------------------------------------------------------


def _module_patch_statement(source: Source, path: str) -> ast.stmt | None:
    """The first top-level statement that is a gevent patch call run at every import (not in a
    function, branch or ``__main__`` guard): what a registration can go right after."""
    from ..model.source import MODULE
    from ..static._context import build_context

    try:
        ctx = build_context(path, None, False, "", source.tree)
    except RecursionError:  # a tree too deep for the walk at this stack: no fix, no crash
        return None
    points = {
        (p.line, p.column)
        for p in ctx.patch_points
        if p.framework == "gevent" and p.context == MODULE and not p.conditional
    }
    for statement in source.tree.body:
        if (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Call)
            and (statement.value.lineno, statement.value.col_offset + 1) in points
        ):
            return statement
    return None


def _insert_after(source: Source, statement: ast.stmt, lines: list[str]) -> Edit:
    """An edit putting ``lines`` on their own lines right after the line ``statement`` ends on."""
    offset = source.line_end(source.end(statement))
    text = "".join(line + source.newline for line in lines)
    if offset == len(source.data) and not source.data.endswith(b"\n"):
        text = source.newline + text  # the file's last line had no newline
    return source.edit(offset, offset, text)


@fixer("MPA701")
def register_psycogreen(source: Source, finding: Finding) -> Fix | None:
    """``patch_psycopg()`` right after the file's module-level patch call."""
    statement = _module_patch_statement(source, finding.path)
    if statement is None:
        return None
    if _bindings(source.tree, "patch_psycopg", strings=False):
        return None  # the name means something else here
    edit = _insert_after(
        source, statement, ["from psycogreen.gevent import patch_psycopg", "patch_psycopg()"]
    )
    return Fix(
        Applicability.UNSAFE,
        "Register psycogreen's wait callback after the patch (`patch_psycopg()`)",
        (edit,),
    )
