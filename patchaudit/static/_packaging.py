"""The packaging metadata at a checked tree's root: what the project runs, needs and ships.

pip reads pyproject.toml, setup.cfg and setup.py at the root, and so does this, for three
things: the programs pip installs as commands (console and GUI scripts, and the script files of
``scripts=``: launchers, gathered with the others by :mod:`._launchers`), the gevent/eventlet
the project needs at run time (:func:`declared_frameworks`) and the top-level import names that
``pip install .`` puts on ``sys.path`` (:func:`distributed_modules`). The tree is untrusted:
nothing in it is run or imported, Python is read with :mod:`ast` and only literal values count,
every read goes through :class:`._commands.Tree` (inside the root, at most ``limit`` bytes),
and a malformed file is skipped, never raised.
"""

from __future__ import annotations

import ast
import keyword
import os
import posixpath
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ._commands import Launcher, Tree, parse_literal, split_target

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["declared_frameworks", "distributed_modules", "ini_items", "packaging_launchers"]

_INI_KEY = re.compile(r"([^=:\s][^=:]*?)\s*[=:]\s*(.*)")
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# What a script file imports that is not the program it starts.
_NOT_TARGETS = frozenset(sys.stdlib_module_names) | {"gevent", "eventlet"}
_PATCHES = {
    "gevent.monkey.patch_all": "gevent",
    "eventlet.monkey_patch": "eventlet",
    "eventlet.patcher.monkey_patch": "eventlet",
}
_TRY = tuple(getattr(ast, name) for name in ("Try", "TryStar") if hasattr(ast, name))
_NOT_LITERAL = ("find:", "find_namespace:", "attr:", "file:")  # setup.cfg directives
_Setup = tuple[dict[str, ast.expr], dict[str, ast.expr]]  # setup() keywords, module assignments


def packaging_launchers(tree: Tree) -> Iterator[Launcher]:
    """Console and GUI scripts of pyproject.toml, setup.cfg and setup.py (literal values), and
    the Python files their ``scripts`` list, which pip copies as commands."""
    text = tree.read("pyproject.toml")
    if text is not None:
        data, lines = _toml(text, "pyproject.toml", tree), text.splitlines()
        for group in ("scripts", "gui-scripts"):
            for name, value in _table(_table(data, "project"), group).items():
                line = _toml_line(lines, f"project.{group}", name)
                yield from _script(group, name, value, f"pyproject.toml:{line}")
        for name, value in _table(_table(_table(data, "tool"), "poetry"), "scripts").items():
            if isinstance(value, dict) and value.get("type", "console") == "console":
                value = value.get("reference") or value.get("callable")
            line = _toml_line(lines, "tool.poetry.scripts", name)
            yield from _script("scripts", name, value, f"pyproject.toml:{line}")
    cfg = ini_items(tree.read("setup.cfg") or "")
    for section, key, values in cfg:
        if section == "options.entry_points" and key in ("console_scripts", "gui_scripts"):
            for line, entry in values:
                name, _, value = entry.partition("=")
                yield from _script(key, name, value, f"setup.cfg:{line}")
    keywords, assigned = setup = _setup_py(tree)
    if "entry_points" in keywords:
        for group, name, value, line in _setup_entries(keywords["entry_points"], assigned):
            yield from _script(group, name, value, f"setup.py:{line}")
    listed = [(f"setup.cfg:{n}", v) for n, v in _cfg_list(cfg, "options", "scripts")]
    listed += [(f"setup.py:{n}", v) for n, v in _setup_list(setup, "scripts")]
    for source, rel in listed:
        yield from _script_file(tree, posixpath.normpath(rel.strip()), source)


def declared_frameworks(root: Path, limit: int) -> frozenset[str]:
    """gevent/eventlet that the project needs at run time: runtime dependencies only.

    Extras, dependency groups and dev dependencies do not count: gunicorn lists gevent as an
    optional extra, which does not make every gunicorn program a gevent program. Names compare
    as normalized distribution names, so ``gevent-websocket`` is not ``gevent``.
    """
    tree = Tree(root, limit)
    text = tree.read("pyproject.toml")
    data = _toml(text, "pyproject.toml", tree) if text is not None else {}
    wanted = _strings(_table(data, "project").get("dependencies"))
    poetry = _table(_table(_table(data, "tool"), "poetry"), "dependencies")
    wanted += [k for k, v in poetry.items() if not (isinstance(v, dict) and v.get("optional"))]
    for section, key, values in ini_items(tree.read("setup.cfg") or ""):
        if (section, key) == ("options", "install_requires"):
            wanted += [value for _, value in values]
    requires = _setup_py(tree)[0].get("install_requires")
    wanted += _strings(parse_literal(requires) if requires is not None else None)
    folder = tree.real("requirements")
    try:
        listed = sorted(os.listdir(folder)) if folder and os.path.isdir(folder) else []
    except OSError:
        listed = []
    prod = [f"requirements/{n}" for n in listed if n.startswith("prod") and n.endswith(".txt")]
    for rel in ("requirements.txt", "requirements.in", "requirements/base.txt", *prod):
        lines = (tree.read(rel) or "").splitlines()
        wanted += [line for line in lines if not line.lstrip().startswith(("-", "#"))]
    matches = (_REQUIREMENT.match(r) for r in wanted if isinstance(r, str))
    names = {re.sub(r"[-_.]+", "-", m[1]).lower() for m in matches if m}
    return frozenset(names & {"gevent", "eventlet"})


def distributed_modules(root: Path, limit: int) -> frozenset[str]:
    """The top-level import names ``pip install .`` puts on ``sys.path``, from literal values.

    The modules and packages the metadata lists (setuptools, poetry, hatch, flit; setup.cfg
    and setup.py), and always the distribution name as an import name (``python-socketio`` ->
    ``python_socketio`` and ``socketio``): the only hint when packages are found at build time
    (``find_packages()``, ``find:``). Empty when the root has no packaging metadata.
    """
    tree = Tree(root, limit)
    text = tree.read("pyproject.toml")
    data = _toml(text, "pyproject.toml", tree) if text is not None else {}
    tool = _table(data, "tool")
    setuptools, poetry = _table(tool, "setuptools"), _table(tool, "poetry")
    dotted = _listed(setuptools.get("py-modules")) + _listed(setuptools.get("packages"))
    paths = []  # file or folder paths: poetry's include (first part), hatch's packages (last)
    included = poetry.get("packages")
    for entry in included if isinstance(included, list) else ():
        include = entry.get("include") if isinstance(entry, dict) else None
        formats = _strings(entry.get("format", "wheel")) if isinstance(entry, dict) else []
        if isinstance(include, str) and ("wheel" in formats or not formats):
            paths.append(include.strip().strip("/").split("/")[0])
    wheel = _table(_table(_table(_table(tool, "hatch"), "build"), "targets"), "wheel")
    paths += [p.strip().rstrip("/").rpartition("/")[2] for p in _listed(wheel.get("packages"))]
    dotted += _text(_table(_table(tool, "flit"), "module").get("name"))
    cfg = ini_items(tree.read("setup.cfg") or "")
    setup = _setup_py(tree)
    for key in ("py_modules", "packages"):
        dotted += [value for _, value in _cfg_list(cfg, "options", key)]
        dotted += [value for _, value in _setup_list(setup, key)]
    names = [p.removesuffix(".py") for p in paths] + [d.strip().split(".")[0] for d in dotted]
    distributions = _text(_table(data, "project").get("name")) + _text(poetry.get("name"))
    distributions += [value for _, value in _cfg_list(cfg, "metadata", "name")]
    name = setup[0].get("name")
    distributions += _text(parse_literal(name)) if isinstance(name, ast.Constant) else []
    for distribution in distributions:
        base = re.sub(r"[-.]", "_", distribution.strip().lower())
        names += [base, base.removeprefix("python_"), base.removeprefix("py_")]
        names.append(base.removesuffix("_python"))
    return frozenset(n for n in names if n.isidentifier() and not keyword.iskeyword(n))


def ini_items(text: str) -> list[tuple[str, str, list[tuple[int, str]]]]:
    """(section, key, [(line, value line)]) with continuation lines: configparser keeps no line
    numbers and raises on what uWSGI and supervisord accept (repeated keys); junk is skipped."""
    items: list[tuple[str, str, list[tuple[int, str]]]] = []
    section, values = None, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if raw[0] in " \t" and values is not None:
            values.append((number, line))
        elif line.startswith("[") and line.endswith("]"):
            section, values = line[1:-1].strip(), None
        elif (match := _INI_KEY.match(line)) and section is not None:
            values = [(number, match[2])] if match[2] else []
            items.append((section, match[1].lower(), values))
        else:
            values = None
    return items


def _cfg_list(
    items: list[tuple[str, str, list[tuple[int, str]]]], section: str, key: str
) -> list[tuple[int, str]]:
    """(line, item) of a setup.cfg list (comma or line separated); a directive names none."""
    found = []
    for _, _, values in (item for item in items if item[:2] == (section, key)):
        if not any(value.startswith(_NOT_LITERAL) for _, value in values):
            found += [(n, part.strip()) for n, value in values for part in value.split(",")]
    return [(n, part) for n, part in found if part]


def _setup_list(setup: _Setup, key: str) -> list[tuple[int, str]]:
    """(line, string) of the literal strings of a setup() keyword's list (``[*BASE, "x"]``
    still names "x"); ``find_packages()`` and other expressions name none."""
    keywords, assigned = setup
    node = keywords.get(key)
    elts = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else []
    items = [(elt.lineno, parse_literal(_resolve(elt, assigned))) for elt in elts]
    return [(line, value) for line, value in items if isinstance(value, str)]


def _script(group: str, name: str, value: object, source: str) -> Iterator[Launcher]:
    """``name = pkg.mod:func [extra]``: the wrapper pip writes imports it and patches nothing."""
    module, function = split_target(value.split("[", 1)[0] if isinstance(value, str) else "")
    kind = "gui" if group[:3] == "gui" else "console"
    command = f"{kind}_scripts: {name.strip()} = {str(value).strip()}"
    if module:
        yield Launcher(f"{kind}-script", command, source, module, None, function, None)


def _script_file(tree: Tree, rel: str, source: str) -> Iterator[Launcher]:
    """A Python file of ``scripts=`` (``bin/dramatiq-gevent``): pip copies it as a command. It
    starts the first module it imports that is not the stdlib's or gevent's, and patches when
    it calls ``patch_all()``/``monkey_patch()`` as it runs. A file that is not Python is not a
    program this checks (a shell script); one outside the root is never read."""
    text = tree.read(rel)
    first = (text or "").partition("\n")[0]
    if text is None or (first.startswith("#!") and not re.search(r"python|pypy", first)):
        return
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return
    aliases: dict[str, str] = {}  # bound name -> the dotted name it stands for
    module, framework = None, None
    for stmt in _run_at_start(body):
        imported: list[str] = []
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                bound = alias.asname or alias.name.partition(".")[0]
                aliases[bound] = alias.name if alias.asname else bound
                imported.append(alias.name)
        elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
            aliases |= {a.asname or a.name: f"{stmt.module}.{a.name}" for a in stmt.names}
            imported.append(stmt.module)
        elif isinstance(stmt, (ast.Expr, ast.Assign)) and isinstance(stmt.value, ast.Call):
            framework = framework or _PATCHES.get(_dotted(stmt.value.func, aliases) or "")
        targets = (name for name in imported if name.partition(".")[0] not in _NOT_TARGETS)
        module = module or next(targets, None)
    yield Launcher("python", f"script: {rel}", source, module, None, None, framework)


def _run_at_start(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module-level statements a script runs, in order: also those of a ``try:`` (its
    body, ``else`` and ``finally``, not the handlers) and of ``if __name__ == "__main__":``."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, _TRY):
            yield from _run_at_start(stmt.body + stmt.orelse + stmt.finalbody)
        elif isinstance(stmt, ast.If) and _is_main(stmt.test):
            yield from _run_at_start(stmt.body)


def _is_main(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and [type(op) for op in test.ops] == [ast.Eq]):
        return False
    sides = [test.left, test.comparators[0]]
    names = {side.id for side in sides if isinstance(side, ast.Name)}
    values = {side.value for side in sides if isinstance(side, ast.Constant)}
    return names == {"__name__"} and values == {"__main__"}


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The dotted name a call's function stands for, through the script's imports."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    base = _dotted(node.value, aliases) if isinstance(node, ast.Attribute) else None
    return f"{base}.{node.attr}" if base is not None and isinstance(node, ast.Attribute) else None


def _strings(value: object) -> list[str]:
    """A literal string or list of them; anything else (an expression) names none."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, (list, tuple)) else []


def _text(value: object) -> list[str]:
    return [value] if isinstance(value, str) else []


def _listed(value: object) -> list[str]:
    """The strings of a TOML array; a lone string is not one (setuptools rejects it)."""
    return _strings(value) if isinstance(value, list) else []


def _toml(text: str, rel: str, tree: Tree) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        tree.problems.add(f"{rel}: not valid TOML ({exc}), not read")
        return {}


def _table(data: object, key: str) -> dict[str, object]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _toml_line(lines: list[str], table: str, key: str) -> int:
    """Best effort (tomllib keeps no positions): the key's line in its table, else the table's."""
    (parent, _, name), current, header = table.rpartition("."), "", 1
    key_rx, table_rx = (re.compile(rf"""\s*["']?{re.escape(k)}["']?\s*=""") for k in (key, name))
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("["):
            current = re.sub(r"""[\s"'\[\]]""", "", line.split("#", 1)[0])
            header = number if current == table else header
        elif current == table and key_rx.match(line):
            return number
        elif current == parent and table_rx.match(line):  # scripts = { ... } inline
            header = number
    return header


def _setup_py(tree: Tree) -> _Setup:
    """The keywords of setup.py's ``setup(...)`` and the module-level assignments, so that a
    keyword naming a variable (``entry_points=ENTRY_POINTS``) reads that variable's literal."""
    try:
        module = ast.parse(tree.read("setup.py") or "")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree.problems.add("setup.py: not valid Python, not read")
        return {}, {}
    assigned = {
        target.id: stmt.value
        for stmt in module.body
        if isinstance(stmt, ast.Assign)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and "setup" in (
            getattr(node.func, "id", None),
            getattr(node.func, "attr", None),
        ):
            keywords = {k.arg: _resolve(k.value, assigned) for k in node.keywords if k.arg}
            return keywords, assigned
    return {}, assigned


def _resolve(node: ast.expr, assigned: dict[str, ast.expr]) -> ast.expr:
    return assigned.get(node.id, node) if isinstance(node, ast.Name) else node


def _setup_entries(
    node: ast.expr, assigned: dict[str, ast.expr]
) -> Iterator[tuple[str, str, str, int]]:
    """(group, name, value, line) of a literal ``entry_points`` dict or INI string."""
    text = parse_literal(node)
    if isinstance(text, str):
        for section, key, values in ini_items(text):
            yield from ((section, key, v, node.lineno + n - 1) for n, v in values[:1])
        return
    pairs = zip(node.keys, node.values, strict=True) if isinstance(node, ast.Dict) else ()
    for key, value in pairs:
        group = parse_literal(key) if key is not None else None
        if group not in ("console_scripts", "gui_scripts"):
            continue
        value = _resolve(value, assigned)
        for item in value.elts if isinstance(value, (ast.List, ast.Tuple, ast.Set)) else [value]:
            entry = parse_literal(item)
            for offset, line in enumerate(entry.splitlines() if isinstance(entry, str) else ()):
                name, eq, target = line.partition("=")
                yield from [(str(group), name, target, item.lineno + offset)] if eq else []
