"""The expectation-comment parser (tests/_expect.py) on strings: every form, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._expect import (
    Expectation,
    ExpectationError,
    comments,
    expectations_in,
    mismatches,
    parse_comment,
    places,
)
from .conftest import FIXTURES


def _e(
    code: str,
    column: int | None = None,
    args: tuple[str, ...] = (),
    confirmed: tuple[str, ...] = (),
) -> Expectation:
    return Expectation(code, "", 0, column, args, confirmed)


@pytest.mark.parametrize(
    "comment, expected",
    [
        ("# MPA101", [_e("MPA101")]),
        ("#MPA101", [_e("MPA101")]),
        ("#   MPA101   ", [_e("MPA101")]),
        ("# MPA101: 5", [_e("MPA101", 5)]),
        ("# MPA101:5", [_e("MPA101", 5)]),
        ('# MPA101: 1, "ssl"', [_e("MPA101", 1, ("ssl",))]),
        ("# MPA101: 1, 'ssl', \"socket\"", [_e("MPA101", 1, ("ssl", "socket"))]),
        ('# MPA101: "ssl"', [_e("MPA101", None, ("ssl",))]),
        ('# MPA101: 1, "a \\"quoted\\" word"', [_e("MPA101", 1, ('a "quoted" word',))]),
        ("# MPA101 (MPA151)", [_e("MPA101", confirmed=("MPA151",))]),
        ("# MPA101(MPA151, MPA152)", [_e("MPA101", confirmed=("MPA151", "MPA152"))]),
        ('# MPA101 (MPA151): 1, "ssl"', [_e("MPA101", 1, ("ssl",), ("MPA151",))]),
        ("# MPA153 MPA315", [_e("MPA153"), _e("MPA315")]),
        ("# MPA103 # MPA312 # MPA313", [_e("MPA103"), _e("MPA312"), _e("MPA313")]),
        ("# MPA101: 3 MPA102", [_e("MPA101", 3), _e("MPA102")]),
        (
            "# MPA101 (MPA151) # MPA707 (MPA754)",
            [_e("MPA101", confirmed=("MPA151",)), _e("MPA707", confirmed=("MPA754",))],
        ),
        # A "#" inside a pinned string does not start a new segment.
        ('# MPA101: 1, "a # MPA999"', [_e("MPA101", 1, ("a # MPA999",))]),
    ],
)
def test_every_form(comment: str, expected: list[Expectation]) -> None:
    assert parse_comment(comment) == expected


@pytest.mark.parametrize(
    "comment, expected",
    [
        # Suppressions, pragmas and prose name codes without expecting them.
        ("# noqa: MPA201", []),
        ("# noqa: E402  # MPA701 (MPA751)", [_e("MPA701", confirmed=("MPA751",))]),
        ("# noqa: MPA201  # MPA002", [_e("MPA002")]),
        ("# see MPA101 for why", []),
        ("# type: ignore[attr-defined]", []),
        ("# Generated lookup table, over the max-file-size: not read.  # MPA003", [_e("MPA003")]),
        ("# don't # MPA101", [_e("MPA101")]),  # a quote in prose is not a string
    ],
)
def test_other_comments_are_not_expectations(comment: str, expected: list[Expectation]) -> None:
    assert parse_comment(comment) == expected


@pytest.mark.parametrize(
    "comment, problem",
    [
        ("# MPA10", "expected a code like MPA101"),
        ("# MPA1011", "expected a code like MPA101"),
        ("# MPAX01", "expected a code like MPA101"),
        ("# MPA101 reported here", "expected another code, '#' or the end"),
        ("# MPA101, MPA102", "expected another code, '#' or the end"),
        ("# MPA101:", "expected a column or a quoted message argument"),
        ("# MPA101: x", "expected a column or a quoted message argument"),
        ("# MPA101: 1,", "expected a quoted message argument"),
        ("# MPA101: 1, ssl", "expected a quoted message argument"),
        ('# MPA101: 1, "unterminated', "expected a quoted message argument"),
        ("# MPA101: 1, 2", "expected a quoted message argument"),
        ("# MPA101: 0", "columns are 1-based"),
        ('# MPA101: ""', "a message argument must be a non-empty string"),
        ("# MPA101 (MPA15)", "expected a confirming code like MPA151"),
        ("# MPA101 ()", "expected a confirming code like MPA151"),
        ("# MPA101 (MPA151", "expected ',' or ')' in the confirmations"),
        ("# MPA101 (MPA151 MPA152)", "expected ',' or ')' in the confirmations"),
    ],
)
def test_malformed_comments_raise_naming_file_and_line(comment: str, problem: str) -> None:
    with pytest.raises(ExpectationError) as raised:
        parse_comment(comment, "app/views.py:12")
    message = str(raised.value)
    assert message.startswith("app/views.py:12: "), message
    assert problem in message
    assert repr(comment) in message  # the whole comment, to find it without opening the file


def test_malformed_comment_in_a_file_names_its_relative_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("import os\nimport ssl  # MPA101 oops\n")
    with pytest.raises(ExpectationError, match=r"^pkg/mod\.py:2: "):
        expectations_in(tmp_path)


def test_comments_inside_python_strings_are_not_expectations() -> None:
    source = (
        'URL = "http://example.com/#MPA101"  # MPA102\n'
        "DOC = '''\n"
        "# MPA103 inside a triple-quoted string\n"
        "'''\n"
        "x = 1  # MPA104: 5\n"
    )
    found = [(n, e.code) for n, text in comments(source, python=True) for e in parse_comment(text)]
    assert found == [(1, "MPA102"), (5, "MPA104")]


def test_python_that_cannot_be_tokenized_is_read_line_by_line() -> None:
    # An unclosed bracket stops tokenize; fixtures may be broken on purpose.
    source = 'print "x"  # MPA001\nx = (1,  # MPA002\n'
    found = [(n, e.code) for n, text in comments(source, python=True) for e in parse_comment(text)]
    assert found == [(1, "MPA001"), (2, "MPA002")]


def test_toml_comments_skip_hashes_in_strings() -> None:
    source = "url = \"http://x/#MPA101\"  # MPA853\nkey = 'a#b'\n# MPA154: 1\n"
    found = [(n, e) for n, text in comments(source, python=False) for e in parse_comment(text)]
    assert found == [(1, _e("MPA853")), (3, _e("MPA154", 1))]


def test_expectations_in_reads_chosen_files_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.py").write_text("import ssl  # MPA101: 1, 'ssl'\n")
    (tmp_path / "pyproject.toml").write_text('[x]\ny = "z"  # MPA853\n')
    (tmp_path / "suite.toml").write_text("args = []  # MPA999\n")
    (tmp_path / "notes.txt").write_text("# MPA777\n")
    found = expectations_in(tmp_path, ("*.py", "*.toml"), skip=("suite.toml",))
    assert found == [
        Expectation("MPA853", "pyproject.toml", 2),
        Expectation("MPA101", "sub/a.py", 1, 1, ("ssl",)),
    ]
    assert places(found) == {("MPA853", "pyproject.toml", 2), ("MPA101", "sub/a.py", 1)}


def _finding(
    rule: str = "MPA101",
    line: int = 3,
    column: int = 1,
    message: str = "importing `ssl` loads `socket`",
    confirmed: tuple[str, ...] = (),
) -> dict[str, object]:
    evidence = {"confirmed_at_runtime": list(confirmed)} if confirmed else {}
    return {
        "rule": rule,
        "path": "app.py",
        "line": line,
        "column": column,
        "message": message,
        "evidence": evidence,
    }


def _at(column: int | None = None, *args: str, confirmed: tuple[str, ...] = ()) -> Expectation:
    return Expectation("MPA101", "app.py", 3, column, args, confirmed)


def test_mismatches_is_empty_when_places_and_pins_hold() -> None:
    assert mismatches([_at()], [_finding()]) == []
    assert mismatches([_at(1, "ssl", "socket")], [_finding()]) == []
    assert mismatches([_at(confirmed=("MPA151",))], [_finding(confirmed=("MPA151",))]) == []


def test_mismatches_compares_places_exactly() -> None:
    assert mismatches([], [_finding()]) == [
        "unexpected ('MPA101', 'app.py', 3): ['importing `ssl` loads `socket`']"
    ]
    assert mismatches([_at()], []) == ["missing ('MPA101', 'app.py', 3)"]


@pytest.mark.parametrize(
    "expectation",
    [_at(5), _at(None, "urllib"), _at(1, "ssl", "urllib"), _at(confirmed=("MPA151",))],
)
def test_mismatches_checks_pins(expectation: Expectation) -> None:
    [problem] = mismatches([expectation], [_finding()])
    assert problem.startswith(f"{expectation} does not match"), problem


def test_one_of_several_findings_on_a_line_may_satisfy_a_pin() -> None:
    two = [_finding(column=1), _finding(column=8, message="importing `urllib3`")]
    assert mismatches([_at(8, "urllib3"), _at(1, "ssl")], two) == []


def test_every_fixture_comment_parses() -> None:
    # The three suites below read subsets of fixtures/; a malformed comment anywhere in it
    # should fail here, in one place, rather than in whichever fixture test reaches it first.
    assert expectations_in(FIXTURES, ("*.py", "*.toml"))
