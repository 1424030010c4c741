"""Per-file analysis: parse once, run the file checks, keep a small plain-data summary.

A :class:`FileSummary` is what the cache stores (as JSON, see ``_plain``) and what the project
stage works from; the AST is dropped as soon as the file checks have run.
"""

from __future__ import annotations

import ast
import sys
import warnings
from dataclasses import dataclass, field

from ..model.noqa import Suppressions, parse_suppressions
from ..model.source import MAIN, MODULE, FileContext, ImportRecord, PatchPoint
from ..rules._model import REGISTRY, Hit, Runner
from ._context import build_context, deep_call, deep_recursion

MAX_NESTING_ERROR = "too deeply nested for Python's parser"


@dataclass
class FileSummary:
    relpath: str
    module: str | None
    is_package: bool
    imports: list[ImportRecord] = field(default_factory=list)
    patch_points: list[PatchPoint] = field(default_factory=list)
    hits: dict[str, list[Hit]] = field(default_factory=dict)
    references: dict[str, tuple[int, int]] = field(default_factory=dict)
    suppressions: Suppressions = field(default_factory=Suppressions)
    module_calls: dict[str, tuple[int, str]] = field(default_factory=dict)  # local fn -> call site
    parse_error: tuple[int, int, str] | None = None  # (line, column, message)
    internal_error: str | None = None  # a check crashed: reported, never raised
    too_large: int | None = None  # size in bytes when over max-file-size: not read at all
    # written to be run: an `if __name__ == "__main__":` block or a `#!` line (see _programs)
    runs_as_script: bool = False
    # module-level functions: name -> (first line, last line), to place a line in its function
    function_lines: dict[str, tuple[int, int]] = field(default_factory=dict)
    # module-level `NAME = {"thread": False, ...}`: literal dicts of booleans, which a
    # `patch_all(**NAME)` elsewhere may spread (see MPA301)
    option_dicts: dict[str, dict[str, bool]] = field(default_factory=dict)

    @property
    def imported_modules(self) -> set[str]:
        return {r.module for r in self.imports}


def summarize(relpath: str, module: str | None, is_package: bool, data: bytes) -> FileSummary:
    """Parse ``data`` and run every file check on it. Never raises for bad input."""
    summary = FileSummary(relpath=relpath, module=module, is_package=is_package)
    tree: ast.Module | None = None
    try:
        source = _decode(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings are the user's linter's business
            tree = ast.parse(source, filename=relpath)
    except SyntaxError as exc:  # includes IndentationError and bad encodings
        summary.parse_error = (exc.lineno or 1, exc.offset or 1, exc.msg or "invalid syntax")
        return summary
    except UnicodeDecodeError as exc:
        summary.parse_error = (1, 1, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
        return summary
    except ValueError as exc:  # NUL bytes
        summary.parse_error = (1, 1, str(exc))
        return summary
    except MemoryError:
        summary.parse_error = (1, 1, MAX_NESTING_ERROR)
        return summary
    except RecursionError:
        pass  # decided from a fresh stack below, as CPython running the file would
    if tree is not None:
        try:
            _analyse(summary, source, tree, data)
            return summary
        except RecursionError:
            summary = FileSummary(relpath=relpath, module=module, is_package=is_package)
    # Too deep for this stack, not necessarily for Python: retry in a thread with a big stack.
    try:
        deep_call(_summarize_deep, summary, source, tree, data)
    except (RecursionError, MemoryError):
        summary = FileSummary(relpath=relpath, module=module, is_package=is_package)
        summary.parse_error = (1, 1, MAX_NESTING_ERROR)
    return summary


def _summarize_deep(
    summary: FileSummary, source: str, tree: ast.Module | None, data: bytes
) -> None:
    if tree is None:
        # Whether the file is too deeply nested is for CPython to say: `python file.py` compiles
        # it with the default recursion limit and no frames below, so give compile() the same
        # headroom. ast.parse at the caller's depth was stricter than that.
        saved = sys.getrecursionlimit()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sys.setrecursionlimit(saved + _depth())
            try:
                compile(source, summary.relpath, "exec", dont_inherit=True)
            except (SyntaxError, ValueError):
                pass  # errors only the compiler checks; the parse below decides
            finally:
                sys.setrecursionlimit(saved)
        with warnings.catch_warnings(), deep_recursion():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=summary.relpath)
    with deep_recursion():
        _analyse(summary, source, tree, data)


def _depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def _analyse(summary: FileSummary, source: str, tree: ast.Module, data: bytes) -> None:
    """Fill ``summary`` from the parsed file; a RecursionError propagates (see summarize)."""
    relpath, module, is_package = summary.relpath, summary.module, summary.is_package
    ctx = build_context(relpath, module, is_package, source, tree)
    summary.imports = ctx.imports
    summary.patch_points = ctx.patch_points
    summary.references = ctx.references
    summary.suppressions = parse_suppressions(source, tree)
    summary.runs_as_script = ctx.has_main_guard or source.startswith("#!")
    summary.option_dicts = _option_dicts(tree)
    summary.function_lines = {
        node.name: (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for call in ctx.calls:
        if call.context in (MODULE, MAIN) and isinstance(call.node.func, ast.Name):
            name = call.node.func.id
            if name in ctx.functions:
                summary.module_calls.setdefault(name, (call.node.lineno, call.context))
    _run_file_checks(ctx, summary, data)


def _option_dicts(tree: ast.Module) -> dict[str, dict[str, bool]]:
    found: dict[str, dict[str, bool]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target, value = node.targets[0], node.value
        if not isinstance(target, ast.Name):
            continue
        pairs: list[tuple[object, object]] = []
        if isinstance(value, ast.Dict) and None not in value.keys:
            pairs = list(zip(value.keys, value.values, strict=True))
        elif isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict":
            pairs = [(ast.Constant(k.arg), k.value) for k in value.keywords if k.arg]
        options = {
            k.value: v.value
            for k, v in pairs
            if isinstance(k, ast.Constant)
            and isinstance(k.value, str)
            and isinstance(v, ast.Constant)
            and isinstance(v.value, bool)
        }
        if options and len(options) == len(pairs):
            found[target.id] = options
    return found


def _run_file_checks(ctx: FileContext, summary: FileSummary, data: bytes) -> None:
    # Each test scans the whole file when the word is absent, and rules share triggers (the
    # four stale-reference rules have the same eleven): each word is looked for once per file.
    present: dict[bytes, bool] = {}

    def found(word: bytes) -> bool:
        seen = present.get(word)
        if seen is None:
            seen = present[word] = word in data
        return seen

    for rule in REGISTRY.values():
        if not rule.runs_in(Runner.FILE):
            continue
        if rule.triggers and not any(found(t) for t in rule.triggers):
            continue
        try:
            hits = list(rule.check(ctx))
        except RecursionError:
            raise  # retried with a deeper stack by summarize()
        except Exception as exc:  # a bug in a check must not take the run down
            summary.internal_error = f"{rule.code} crashed: {type(exc).__name__}: {exc}"
            continue
        if hits:
            summary.hits[rule.code] = hits


def _decode(data: bytes) -> str:
    # ast.parse honours PEP 263 coding cookies when given bytes; decode ourselves only to keep the
    # text for suppression comments, using the same rules.
    import io
    import tokenize

    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    return text[1:] if text.startswith("\ufeff") else text
