"""Output formats. Each reporter turns a finished :class:`~patchaudit.Report` into text.

Reporters know nothing about the engine: the findings arrive filtered and sorted, and the only
other inputs are the rule table (names, docs, fixes) and the directory paths are relative to.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TextIO

from .._findings import Report
from ..rules._model import Rule

FORMATS = ("full", "concise", "json", "sarif", "github")


class Reporter(Protocol):
    def report(self, report: Report) -> None: ...


def make_reporter(
    fmt: str,
    stream: TextIO,
    *,
    color: bool,
    rules: Mapping[str, Rule],
    cwd: Path | None = None,
) -> Reporter:
    """Build the reporter for ``fmt`` (one of :data:`FORMATS`) writing to ``stream``.

    ``color`` is the caller's final decision (TTY, ``NO_COLOR``, ``--color``); only ``full``
    and ``concise`` use it. ``cwd`` is where finding paths are relative to (default: the
    current directory); ``full`` reads snippets and ``sarif`` line hashes from there.
    """
    # Imported lazily so `--output-format json` never pays for importing rich.
    base = Path.cwd() if cwd is None else cwd
    if fmt == "full":
        from ._full import FullReporter

        return FullReporter(stream, color=color, rules=rules, cwd=base)
    if fmt == "concise":
        from ._concise import ConciseReporter

        return ConciseReporter(stream, color=color)
    if fmt == "json":
        from ._json import JsonReporter

        return JsonReporter(stream, rules=rules)
    if fmt == "sarif":
        from ._sarif import SarifReporter

        return SarifReporter(stream, rules=rules, cwd=base)
    if fmt == "github":
        from ._github import GithubReporter

        return GithubReporter(stream)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "Reporter", "make_reporter"]
