"""Expectation comments: the one parser for rule fixtures, runtime apps and plugin suites.

A fixture states what patchaudit must report in comments on the reported lines, in the style of
flake8-async and flake8-bugbear fixtures. The grammar (``WS`` is spaces or tabs)::

    comment      := "#" segment ("#" segment)*
    segment      := WS* (expectations | other)
    other        := any text that does not start with "MPA"; not an expectation
                    (``# noqa: MPA201``, ``# type: ignore``, prose)
    expectations := expectation (WS+ expectation)* WS*
    expectation  := CODE [WS* confirmed] [WS* ":" WS* pins]
    confirmed    := "(" WS* CODE (WS* "," WS* CODE)* WS* ")"
    pins         := COLUMN (WS* "," WS* STRING)*
                  | STRING (WS* "," WS* STRING)*
    CODE         := "MPA" DIGIT DIGIT DIGIT
    COLUMN       := DIGIT+                  1-based, as reports print it (``path:line:col``)
    STRING       := a one-line Python string literal, '...' or "...", with the usual escapes

Meaning, for an expectation on line N of file F:

* ``# MPA101``: a finding with code MPA101 at F:N. Several may follow each other, in one
  segment (``# MPA153 MPA315``) or in several (``# MPA103 # MPA312``).
* ``# MPA101: 5``: ... and its column is 5 (this form was accepted before and its number
  ignored; it is now asserted).
* ``# MPA101: 1, "ssl", "socket"`` or ``# MPA101: "ssl"``: ... and its message contains each
  string (message arguments, as flake8-async pins them).
* ``# MPA101 (MPA151)``: a static finding that the runtime audit confirmed with MPA151 at the
  same place (``evidence["confirmed_at_runtime"]`` lists it). Pins may follow:
  ``# MPA101 (MPA151): 1``.

The set of (code, file, line) expected is compared exactly with the set reported; columns,
strings and confirmations are checked only where a comment gives them. A segment that starts
with ``MPA`` but does not follow the grammar is an error naming ``file:line``, so a typo can
not silently drop an expectation.

Comments are found by :mod:`tokenize` in ``.py`` files, so ``"# MPA101"`` inside a string is
not an expectation. A Python file that cannot be tokenized (fixtures may be broken on purpose)
and other files (``.toml``) are read line by line: the comment starts at the first ``#``
outside a one-line '...' or "..." string.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Place = tuple[str, str, int]  # (code, path relative to the fixture root, line)

_CODE = re.compile(r"MPA\d{3}(?!\w)")
_WS = re.compile(r"[ \t]*")
_COLUMN = re.compile(r"\d+(?!\w)")
# A one-line string literal; ast.literal_eval gives its value (escapes included).
_STRING = re.compile(r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")


class ExpectationError(ValueError):
    """A comment that starts like an expectation but does not follow the grammar."""


@dataclass(frozen=True)
class Expectation:
    code: str
    path: str
    line: int
    column: int | None = None
    args: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()

    @property
    def place(self) -> Place:
        return (self.code, self.path, self.line)


class _Cursor:
    """Position in one comment; every error it raises names the comment's file:line."""

    def __init__(self, text: str, where: str) -> None:
        self.text, self.where, self.pos = text, where, 0

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def take(self, pattern: re.Pattern[str]) -> str | None:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    def expect(self, pattern: re.Pattern[str], what: str) -> str:
        token = self.take(pattern)
        if token is None:
            self.fail(f"expected {what}")
        return token  # type: ignore[return-value]

    def fail(self, problem: str) -> None:
        rest = self.text[self.pos :] or "end of comment"
        raise ExpectationError(f"{self.where}: {problem} at {rest!r} in {self.text!r}")


def parse_comment(comment: str, where: str = "<comment>") -> list[Expectation]:
    """The expectations in one comment (starting at its ``#``), with ``path``/``line`` unset.

    ``where`` (``file:line``) is used in errors only.
    """
    cursor = _Cursor(comment, where)
    found: list[Expectation] = []
    while True:
        hash_at = cursor.text.find("#", cursor.pos)
        if hash_at < 0:
            return found
        cursor.pos = hash_at + 1
        cursor.skip_ws()
        if not cursor.peek("MPA"):
            continue  # prose, noqa, type: ignore: skipped up to the next "#"
        while True:
            found.append(_expectation(cursor))
            cursor.skip_ws()
            if cursor.at_end() or cursor.peek("#"):
                break
            if not cursor.peek("MPA"):
                cursor.fail("expected another code, '#' or the end of the comment")


def _expectation(cursor: _Cursor) -> Expectation:
    code = cursor.expect(_CODE, "a code like MPA101")
    cursor.skip_ws()
    confirmed: list[str] = []
    if cursor.peek("("):
        cursor.pos += 1
        while True:
            cursor.skip_ws()
            confirmed.append(cursor.expect(_CODE, "a confirming code like MPA151"))
            cursor.skip_ws()
            if cursor.peek(")"):
                cursor.pos += 1
                break
            if not cursor.peek(","):
                cursor.fail("expected ',' or ')' in the confirmations")
            cursor.pos += 1
        cursor.skip_ws()
    column: int | None = None
    args: list[str] = []
    if cursor.peek(":"):
        cursor.pos += 1
        cursor.skip_ws()
        number = cursor.take(_COLUMN)
        if number is not None:
            column = int(number)
            if column < 1:
                cursor.fail("columns are 1-based")
        else:
            args.append(_string(cursor, "a column or a quoted message argument"))
        while True:
            cursor.skip_ws()
            if not cursor.peek(","):
                break
            cursor.pos += 1
            cursor.skip_ws()
            args.append(_string(cursor, "a quoted message argument"))
    return Expectation(code, "", 0, column, tuple(args), tuple(confirmed))


def _string(cursor: _Cursor, what: str) -> str:
    literal = cursor.expect(_STRING, what)
    value = ast.literal_eval(literal)
    if not isinstance(value, str) or not value:
        cursor.fail("a message argument must be a non-empty string")
    return value


def comments(text: str, python: bool) -> Iterator[tuple[int, str]]:
    """(line, comment text from its ``#``) for every comment in a file's ``text``."""
    if python:
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        except (tokenize.TokenError, SyntaxError):
            pass  # broken on purpose, e.g. Python 2 code: read it line by line below
        else:
            for token in tokens:
                if token.type == tokenize.COMMENT:
                    yield token.start[0], token.string
            return
    for number, line in enumerate(text.splitlines(), start=1):
        start = _comment_start(line)
        if start is not None:
            yield number, line[start:]


def _comment_start(line: str) -> int | None:
    """Index of the first ``#`` outside a one-line '...' or "..." string in ``line``."""
    quote: str | None = None
    escaped = False
    for index, char in enumerate(line):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return index
    return None


def expectations_in(
    root: Path, patterns: Iterable[str] = ("*.py",), skip: Iterable[str] = ()
) -> list[Expectation]:
    """Every expectation in files under ``root`` matching ``patterns``, paths relative to it.

    ``skip`` names files (by name) that are configuration of the test, not of the project.
    """
    skipped = set(skip)
    paths = sorted({p for pattern in patterns for p in root.rglob(pattern) if p.is_file()})
    found: list[Expectation] = []
    for path in paths:
        if path.name in skipped:
            continue
        rel = path.relative_to(root).as_posix()
        for number, comment in comments(path.read_text(), python=path.suffix == ".py"):
            for parsed in parse_comment(comment, f"{rel}:{number}"):
                found.append(
                    Expectation(
                        parsed.code, rel, number, parsed.column, parsed.args, parsed.confirmed
                    )
                )
    return found


def places(expected: Iterable[Expectation]) -> set[Place]:
    return {e.place for e in expected}


def mismatches(expected: Iterable[Expectation], findings: Iterable[Mapping[str, Any]]) -> list[str]:
    """What differs between the expectations and the reported findings (JSON form); [] if none.

    The (code, path, line) sets must be equal; then each expectation's column, message
    strings and confirmations must hold for some finding at its place (several findings of
    one code may share a line).
    """
    expected = list(expected)
    findings = list(findings)
    by_place: dict[Place, list[Mapping[str, Any]]] = {}
    for finding in findings:
        by_place.setdefault((finding["rule"], finding["path"], finding["line"]), []).append(finding)
    wanted = places(expected)
    problems = [f"missing {p}" for p in sorted(wanted - by_place.keys())]
    problems += [
        f"unexpected {p}: {[f['message'] for f in by_place[p]]}"
        for p in sorted(by_place.keys() - wanted)
    ]
    for expectation in expected:
        candidates = by_place.get(expectation.place, [])
        if candidates and not any(_satisfies(f, expectation) for f in candidates):
            shown = [(f["column"], f["message"], _confirmed(f)) for f in candidates]
            problems.append(
                f"{expectation} does not match any of (column, message, confirmed) {shown}"
            )
    return problems


def _confirmed(finding: Mapping[str, Any]) -> list[str]:
    return list(finding.get("evidence", {}).get("confirmed_at_runtime", []))


def _satisfies(finding: Mapping[str, Any], expectation: Expectation) -> bool:
    return (
        (expectation.column is None or finding["column"] == expectation.column)
        and all(arg in finding["message"] for arg in expectation.args)
        and set(expectation.confirmed) <= set(_confirmed(finding))
    )
