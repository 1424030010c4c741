"""MPA7xx, incompatible-library: C drivers and clients that need an extra step under gevent.

Most of these rules are data: one table each in ``patchaudit/data/libraries.toml``, turned into
rules here. MPA703 (init_gevent before the patch) is an ordering question, so it is code.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from typing import Any

from .._findings import Category, Severity
from ..static._context import MAIN, MODULE, ImportRecord
from ..static._known import load_table
from ._model import Hit, Rule, Scope, add_rule, rule


def _matches(module: str, prefixes: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _import_check(entry: dict[str, Any]) -> Callable[[Any], Iterator[Hit]]:
    """Project check: the library is imported and no fix is referenced anywhere."""
    modules = entry["modules"]
    unless = entry.get("unless_modules", [])
    harmless = re.compile(entry["unless_names"]) if "unless_names" in entry else None

    def counts(record: ImportRecord) -> bool:
        if not _matches(record.module, modules) or _matches(record.module, unless):
            return False
        if not record.names:
            return True  # `import zmq`
        # `from zmq import green as zmq` imports the fix; `from zmq import ZMQError` a name the
        # fix shares with the library.
        return not all(
            _matches(f"{record.module}.{name}", unless)
            or (harmless is not None and harmless.fullmatch(name))
            for name in record.names
        )

    def check(project) -> Iterator[Hit]:
        # Start from the few files that import the library, then ask about their programs;
        # walking every program of a big tree would cost programs x files.
        for summary in project.summaries.values():
            record = next((r for r in summary.imports if counts(r)), None)
            if record is None:
                continue
            for program in project.programs_of(summary):
                if not ("gevent" in program.frameworks or "gevent" in project.global_frameworks):
                    continue
                if any(program.references(name) for name in entry["fixed_by"]):
                    continue  # the fix is installed somewhere in this program
                yield Hit(
                    path=summary.relpath,
                    line=record.line,
                    column=record.column,
                    args={"module": record.module},
                )
                break

    return check


def _method_check(entry: dict[str, Any]) -> Callable[[Any], Iterator[Hit]]:
    """File check: blocking method calls in files that import the library."""
    modules = entry["modules"]
    methods = frozenset(entry["methods"])

    def check(ctx) -> Iterator[Hit]:
        if not any(_matches(r.module, modules) for r in ctx.imports):
            return
        for call in ctx.calls:
            if call.method in methods and call.qualname is None and not _zero_timeout(call.node):
                yield Hit(
                    line=call.node.lineno,
                    column=call.node.col_offset + 1,
                    args={"method": call.method},
                )

    return check


def _register_library_rules() -> None:
    for entry in load_table("libraries.toml")["library"]:
        by_method = bool(entry.get("methods"))
        add_rule(
            Rule(
                code=entry["code"],
                name=entry["name"],
                category=Category.INCOMPATIBLE_LIBRARY,
                severity=Severity(entry["severity"]),
                summary=entry["summary"],
                message=entry["message"],
                why=entry["why"].strip(),
                fix=entry["fix"].strip(),
                bad=entry["bad"].strip("\n"),
                good=entry["good"].strip("\n"),
                references=tuple(entry["references"]),
                kind="file" if by_method else "project",
                scope=Scope.GEVENT_PROGRAM,
                check=_method_check(entry) if by_method else _import_check(entry),
                triggers=tuple(m.encode() for m in entry["modules"]) if by_method else (),
            )
        )


_register_library_rules()


# Where each confluent-kafka method takes its timeout: consume(num_messages, timeout).
_TIMEOUT_POSITION = {"consume": 1}


def _zero_timeout(call: ast.Call) -> bool:
    method = call.func.attr if isinstance(call.func, ast.Attribute) else ""
    index = _TIMEOUT_POSITION.get(method, 0)
    values = list(call.args[index : index + 1]) + [
        k.value for k in call.keywords if k.arg == "timeout"
    ]
    return any(isinstance(v, ast.Constant) and v.value in (0, 0.0) for v in values)


@rule(
    code="MPA703",
    name="grpc-init-gevent-before-patch",
    category=Category.INCOMPATIBLE_LIBRARY,
    severity=Severity.ERROR,
    summary="`grpc.experimental.gevent.init_gevent()` runs before the monkey-patch call",
    message="`init_gevent()` runs before the monkey-patch call; grpc needs the patched stdlib",
    why="""
`init_gevent()` "must be called AFTER the python standard lib has been patched, but BEFORE
creating any gRPC objects". Called earlier (at import before `patch_all()`, or in gunicorn's
`post_fork`/`post_init`, which run before the worker patches) it sets up grpc on native threads
and deadlocks (FM-10).
""",
    fix="Call it right after `monkey.patch_all()`; under gunicorn, from a "
    "`gevent.events.GeventDidPatchBuiltinModulesEvent` subscriber.",
    bad="""
import grpc.experimental.gevent as grpc_gevent
grpc_gevent.init_gevent()
from gevent import monkey
monkey.patch_all()
""",
    good="""
from gevent import monkey
monkey.patch_all()
import grpc.experimental.gevent as grpc_gevent
grpc_gevent.init_gevent()
""",
    references=("FM-10", "grpc/grpc#15071"),
    scope=Scope.PRE_PATCH,
    triggers=(b"init_gevent",),
)
def check_init_gevent_early(ctx) -> Iterator[Hit]:
    for call in ctx.calls_to("grpc.experimental.gevent.init_gevent"):
        if call.context in (MODULE, MAIN):
            yield Hit(line=call.node.lineno, column=call.node.col_offset + 1, context=call.context)
