"""What one source file says: execution contexts, import records, patch points, call sites.

The static engine (:mod:`patchaudit.static._context`) fills a :class:`FileContext` in one walk
over the AST; the file checks of :mod:`patchaudit.rules` read it. Both import it from here, so
the rules never import the engine.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field

MODULE = "module"  # runs when the module is imported (top level, class bodies, if/try blocks)
MAIN = "main"  # runs only under `if __name__ == "__main__":`
FUNCTION = "function"  # runs when some function is called
TYPE_CHECKING = "type-checking"  # never runs

GEVENT_PATCH_FUNCTIONS = frozenset(
    {
        "gevent.monkey.patch_all",
        "gevent.monkey.patch_builtins",
        "gevent.monkey.patch_dns",
        "gevent.monkey.patch_os",
        "gevent.monkey.patch_queue",
        "gevent.monkey.patch_select",
        "gevent.monkey.patch_selectors",
        "gevent.monkey.patch_signal",
        "gevent.monkey.patch_socket",
        "gevent.monkey.patch_ssl",
        "gevent.monkey.patch_subprocess",
        "gevent.monkey.patch_sys",
        "gevent.monkey.patch_thread",
        "gevent.monkey.patch_time",
        "gevent.monkey.patch_contextvars",
    }
)
EVENTLET_PATCH_FUNCTIONS = frozenset({"eventlet.monkey_patch", "eventlet.patcher.monkey_patch"})


@dataclass(frozen=True)
class ImportRecord:
    line: int
    column: int
    module: str  # absolute dotted name of the imported module (relative imports resolved)
    names: tuple[str, ...]  # names taken by `from module import ...`; () for `import module`
    context: str
    end_line: int
    end_column: int
    # inside an `if`/`elif`/`else`, an `except` handler or a `match` case: one alternative of
    # several (`if async_mode == "eventlet": import eventlet`), not what every run executes
    conditional: bool = False


@dataclass(frozen=True)
class PatchPoint:
    line: int
    column: int
    framework: str  # "gevent" | "eventlet"
    function: str  # qualified name of the patch function
    positional: int  # number of positional arguments
    keywords: tuple[tuple[str, object], ...]  # literal keyword values; non-literals become "?"
    context: str
    enclosing: str | None  # name of the enclosing function, if any
    conditional: bool = False  # as for ImportRecord: one branch of an if/except/match
    # `patch_all(**settings.GEVENT_PATCH)`: what each `**` argument names (resolved through the
    # file's imports when it can be), for the project stage to look up
    spread: tuple[str, ...] = ()

    @property
    def is_patch_all(self) -> bool:
        return self.function in ("gevent.monkey.patch_all",) or self.framework == "eventlet"

    def keyword(self, name: str, default: object = None) -> object:
        for key, value in self.keywords:
            if key == name:
                return value
        return default


@dataclass
class CallSite:
    node: ast.Call
    qualname: str | None  # resolved dotted name of the callee, when it resolves through imports
    context: str
    function: ast.FunctionDef | ast.AsyncFunctionDef | None  # innermost enclosing function
    method: str | None  # attribute name for `x.method(...)` calls, resolved or not


@dataclass
class FileContext:
    """A parsed file plus the indexes the checks use. Built once per file."""

    path: str
    module: str | None
    is_package: bool
    source: str
    tree: ast.Module
    aliases: dict[str, str] = field(default_factory=dict)
    imports: list[ImportRecord] = field(default_factory=list)
    calls: list[CallSite] = field(default_factory=list)
    classes: list[tuple[ast.ClassDef, str]] = field(default_factory=list)  # (node, context)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    references: dict[str, tuple[int, int]] = field(default_factory=dict)  # qualname -> first use
    patch_points: list[PatchPoint] = field(default_factory=list)
    module_assigns: list[tuple[ast.stmt, str]] = field(default_factory=list)  # (Assign, context)
    has_main_guard: bool = False  # an `if __name__ == "__main__":` block at module level

    def qualname(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to, resolved through this file's imports."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.aliases.get(node.id)
        if base is None:
            return None
        parts.append(base)
        return ".".join(reversed(parts))

    def calls_to(self, *qualnames: str) -> Iterator[CallSite]:
        wanted = set(qualnames)
        return (c for c in self.calls if c.qualname in wanted)

    def imports_module(self, prefix: str) -> bool:
        return any(r.module == prefix or r.module.startswith(prefix + ".") for r in self.imports)

    @property
    def is_test_code(self) -> bool:
        # The module name is relative to the project's source root, so a project that happens
        # to sit in a folder named tests/ is not all test code; scripts fall back to the path.
        if self.module:
            return is_test_path(self.module.replace(".", "/") + ".py")
        return is_test_path(self.path)


def module_key(module: str | None, relpath: str) -> str:
    """The project's name for a file: its module, or for a script that no import can reach, a
    key no import can produce (scripts still take part in the analysis)."""
    return module if module is not None else f"__main__:{relpath}"


def is_test_path(relpath: str) -> bool:
    """Whether a file (forward slashes) is test code: the names pytest collects by default,
    ``test_*.py``, ``*_test.py`` and ``conftest.py``, or anything under a ``tests/`` folder.

    Test code imports the program's modules but is not the program: it runs under the test
    runner, with its own fixtures and mocks, never under the production server.
    """
    *folders, name = relpath.split("/")
    return (
        "tests" in folders
        or name == "conftest.py"
        or (name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")))
    )


def is_entry_point(module: str | None, relpath: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``entry-points`` names this file, by module name or by path."""
    for pattern in patterns:
        if module is not None and fnmatch.fnmatchcase(module, pattern):
            return True
        if fnmatch.fnmatchcase(relpath, pattern):
            return True
    return False
