"""MPA0xx, parse-error: files and suppression comments patchaudit could not use."""

from __future__ import annotations

from collections.abc import Iterator

from .._findings import Category, Severity
from ._model import REGISTRY, Hit, Runner, rule


@rule(
    code="MPA001",
    name="syntax-error",
    category=Category.PARSE_ERROR,
    severity=Severity.ERROR,
    summary="The file is not valid Python 3, so it was not analysed",
    message="cannot parse: {detail}",
    why="""
patchaudit reads source with Python's own parser. A file it cannot parse (Python 2 syntax, a
broken encoding, NUL bytes, nesting deeper than the parser allows) is reported and skipped; the
rest of the project is still checked, but imports through this file are invisible to the
ordering rules.
""",
    fix="Fix the syntax error, or exclude the file (`[tool.patchaudit] extend-exclude`).",
    bad="""
print "hello"
""",
    good="""
print("hello")
""",
    references=("parse-error",),
    runners=Runner.PROJECT,
)
def check_syntax(project) -> Iterator[Hit]:
    for summary in project.summaries.values():
        if summary.parse_error is not None:
            line, column, detail = summary.parse_error
            yield Hit(path=summary.relpath, line=line, column=column, args={"detail": detail})


@rule(
    code="MPA002",
    name="unused-noqa",
    category=Category.PARSE_ERROR,
    severity=Severity.INFO,
    summary="A `# noqa` comment names patchaudit codes that report nothing there",
    message="unused `noqa` for {codes}",
    why="""
A suppression that no longer matches anything hides the next real finding on that line and
documents a problem that is gone (like ruff's RUF100). Only patchaudit's own codes are checked;
a bare `# noqa` may belong to another linter and is left alone.
""",
    fix="Delete the code from the comment (or the whole comment).",
    bad="""
import os  # noqa: MPA201
""",
    good="""
import os
""",
    references=("ruff RUF100",),
    runners=Runner.PROJECT,
)
def check_unused_noqa(project) -> Iterator[Hit]:
    used = project.suppressions_used
    for relpath, summary in project.summaries.items():
        fired = used.get(relpath, set())
        sup = summary.suppressions
        for line, codes in sup.lines.items():
            if codes is None:
                continue
            unused = sorted(c for c in codes if c in REGISTRY and (line, c) not in fired)
            if unused:
                yield Hit(path=relpath, line=line, column=1, args={"codes": ", ".join(unused)})
        if sup.file_wide and sup.file_codes is not None and sup.file_line is not None:
            fired_codes = {code for _, code in fired}
            unused = sorted(c for c in sup.file_codes if c in REGISTRY and c not in fired_codes)
            if unused:
                yield Hit(
                    path=relpath, line=sup.file_line, column=1, args={"codes": ", ".join(unused)}
                )


@rule(
    code="MPA003",
    name="file-too-large",
    category=Category.PARSE_ERROR,
    severity=Severity.INFO,
    summary="The file is bigger than `max-file-size`, so it was not read",
    message="not analysed: {size} bytes is over max-file-size ({limit} bytes)",
    why="""
Real source files are small; a module of several megabytes is generated (protocol buffers,
tables, minified data) or planted, and parsing it costs far more than it can tell: a generated
20 MB module takes about a minute and over 4 GB of memory. Files over `max-file-size` (default
4 MiB) are not read at all, so nothing in them is analysed and imports through them are
invisible to the ordering rules.
""",
    fix="""
Exclude the file (`[tool.patchaudit] extend-exclude`) if it is generated, or raise the limit
(`max-file-size = "16MiB"`, `--max-file-size 16MiB`) to analyse it.
""",
    bad="""
# api_pb2.py: 12 MB written by protoc, over the 4 MiB default
DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(b"...")
""",
    good="""
# pyproject.toml: [tool.patchaudit] extend-exclude = ["*_pb2.py"]
""",
    references=("max-file-size",),
    runners=Runner.PROJECT,
)
def check_too_large(project) -> Iterator[Hit]:
    limit = project.config.max_file_size
    for summary in project.summaries.values():
        if summary.too_large is not None:
            args = {"size": summary.too_large, "limit": limit}
            yield Hit(path=summary.relpath, line=1, column=1, args=args)
