"""The package's layers: no import cycle between patchaudit's parts, and a cheap rule catalogue.

The import graph is read from the source (every ``import`` statement counts: module level,
inside functions, under ``if TYPE_CHECKING:``), so a function-local import cannot hide a cycle.
Each node is a part of the package: a subpackage (``patchaudit.rules``) or a top-level module
(``patchaudit._config``); imports within one part are not edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "patchaudit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _part(module: str) -> str | None:
    """``patchaudit.rules._model`` -> ``patchaudit.rules``; None outside the package or for the
    package's own ``__init__`` (a lazy facade that imports nothing eagerly but the version)."""
    parts = module.split(".")
    if parts[0] != "patchaudit" or len(parts) == 1:
        return None
    return ".".join(parts[:2])


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            found.add(base)
            # `from .. import rules` imports the subpackage patchaudit.rules
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def import_graph() -> dict[str, set[str]]:
    parts = {_part(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
    graph: dict[str, set[str]] = {part: set() for part in parts if part is not None}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":  # `python -m` entry points sit above every layer
            continue
        module = _module_name(path)
        source = _part(module)
        if source is None:
            continue
        for imported in _imports(path, module):
            target = _part(imported)
            if target is not None and target != source and target in graph:
                graph[source].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    # pytest_plugin/_report.py imports the catalogue only inside functions
    assert "patchaudit.rules" in graph["patchaudit.pytest_plugin"]
    assert "patchaudit.static" in graph["patchaudit.runtime"]


def test_no_import_cycle_between_the_parts_of_the_package() -> None:
    assert cycles(import_graph()) == []


def test_the_model_is_a_leaf() -> None:
    graph = import_graph()
    # The probe package is a leaf too (stdlib only; tests/test_probe_package.py checks it).
    assert graph["patchaudit.model"] <= {"patchaudit._findings", "patchaudit.probe"}
    assert graph["patchaudit.probe"] == set()


def test_rules_import_only_the_model_and_the_finding_model() -> None:
    graph = import_graph()
    assert graph["patchaudit.rules"] <= {"patchaudit.model", "patchaudit._findings"}


def test_importing_the_rules_imports_neither_the_engine_nor_gevent() -> None:
    code = (
        "import patchaudit._findings, patchaudit.rules, sys; "
        "assert not any(m.startswith('patchaudit.static') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('patchaudit')); "
        "assert 'gevent' not in sys.modules and 'eventlet' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_no_module_is_over_500_lines() -> None:
    """Big modules hide their architecture; split by concern before one grows past this."""
    sizes = {
        path.relative_to(PACKAGE.parent).as_posix(): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 500} == {}


def test_every_library_the_probe_checks_has_a_runtime_rule_and_back() -> None:
    """The stdlib-only probe cannot import the rules, so the library name is the link between
    its ``libraries`` events and MPA751-755: both sides must name the same libraries."""
    probe = ast.parse((PACKAGE / "probe" / "_libraries.py").read_text())
    checked = {
        entry.elts[0].value
        for node in ast.walk(probe)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "_LIBRARY_CHECKS" for t in node.targets)
        for entry in node.value.elts
    }
    rules = ast.parse((PACKAGE / "rules" / "libraries.py").read_text())
    ruled = {
        node.args[2].value
        for node in ast.walk(rules)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "_library_rule"
    }
    assert checked == ruled == {"psycopg2", "grpc", "zmq", "cassandra", "urllib3"}
