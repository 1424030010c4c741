"""``--statistics``: how many findings each rule has, most first (ruff's ``--statistics``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, TextIO

from .._findings import Report
from ..rules._model import Rule
from ._common import write_text


def statistics(report: Report, rules: Mapping[str, Rule]) -> list[dict[str, Any]]:
    """One row a rule code: its count, code and name; by count, then code."""
    counts = Counter(f.rule for f in report.findings)
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [
        {"code": code, "name": rules[code].name if code in rules else None, "count": count}
        for code, count in rows
    ]


def write_statistics(
    report: Report, stream: TextIO, rules: Mapping[str, Rule], *, as_json: bool
) -> None:
    rows = statistics(report, rules)
    if as_json:
        from ._json import dumps

        write_text(stream, dumps(rows))
        return
    width = max((len(str(row["count"])) for row in rows), default=1)
    code_width = max((len(row["code"]) for row in rows), default=1)
    lines = [
        f"{row['count']:>{width}}  {row['code']:<{code_width}}  {row['name'] or ''}".rstrip()
        for row in rows
    ]
    write_text(stream, "".join(f"{line}\n" for line in lines))
