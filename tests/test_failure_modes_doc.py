"""docs/failure-modes.md resolves every FM-xx the rules cite and agrees with the rule data."""

from __future__ import annotations

import re

import pytest

from patchaudit.rules import REGISTRY

from .conftest import REPO

DOC = REPO / "docs" / "failure-modes.md"
TEXT = DOC.read_text(encoding="utf-8")
LINES = TEXT.splitlines()

ALL_FMS = [f"FM-{n:02d}" for n in range(1, 31)]
ANCHOR = re.compile(r'^<a id="(fm-\d\d)"></a>$')
HEADING = re.compile(r"^## (FM-\d\d): (\S.*)$")
TABLE_ROW = re.compile(r"^\| \[(FM-\d\d)\]\(#(fm-\d\d)\) \| ([^|]+?) \| ([^|]+?) \|$")
RULE_LINK = re.compile(r"\[(MPA\d{3})\]\(rules/(MPA\d{3})\.md\)")
RULE_CODE = re.compile(r"\bMPA\d{3}\b")
REPORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*#[1-9]\d*$")
PARTS = ("**Symptom:**", "**Cause:**", "**Fix:**", "**Detected by:**", "**Public reports:**")
NO_RULE = "no rule yet."


def cited_by_rules() -> dict[str, set[str]]:
    """FM id -> codes of the rules whose references cite it (what the rule pages print)."""
    cited: dict[str, set[str]] = {}
    for code, rule in REGISTRY.items():
        for fm in rule.failure_modes:
            cited.setdefault(fm, set()).add(code)
    return cited


def headings() -> dict[str, tuple[int, str]]:
    """FM id -> (line index, title) of its `## FM-xx: title` heading."""
    found: dict[str, tuple[int, str]] = {}
    for index, line in enumerate(LINES):
        match = HEADING.match(line)
        if match:
            assert match.group(1) not in found, f"duplicate heading {match.group(1)}"
            found[match.group(1)] = (index, match.group(2))
    return found


def sections() -> dict[str, str]:
    """FM id -> the text from its heading up to the next level-2 heading."""
    result = {}
    for fm, (start, _title) in headings().items():
        end = next(
            (i for i in range(start + 1, len(LINES)) if LINES[i].startswith("## ")), len(LINES)
        )
        result[fm] = "\n".join(LINES[start:end])
    return result


def table() -> list[tuple[str, str, str, str]]:
    """(FM id, anchor, title, rules cell) rows of the table above the first section."""
    first_section = min(index for index, _title in headings().values())
    return [
        match.groups()
        for line in LINES[:first_section]
        if (match := TABLE_ROW.match(line)) is not None
    ]


def part(section: str, label: str) -> str:
    """The one line of ``section`` that starts with ``label``, without the label."""
    lines = [line for line in section.splitlines() if line.startswith(label)]
    assert len(lines) == 1, (label, section.splitlines()[0])
    return lines[0][len(label) :].strip()


def linked_codes(text: str) -> set[str]:
    links = RULE_LINK.findall(text)
    assert all(shown == target for shown, target in links), links
    return {code for code, _target in links}


def test_every_cited_failure_mode_has_an_anchor_and_a_heading() -> None:
    anchors = {m.group(1) for line in LINES if (m := ANCHOR.match(line))}
    assert set(cited_by_rules()) - set(headings()) == set()
    assert {fm.lower() for fm in cited_by_rules()} - anchors == set()
    # and the page has exactly FM-01..FM-30, each with both
    assert set(headings()) == set(ALL_FMS)
    assert anchors == {fm.lower() for fm in ALL_FMS}


def test_each_anchor_is_on_the_line_right_before_its_heading() -> None:
    for fm, (index, _title) in headings().items():
        assert LINES[index - 1] == f'<a id="{fm.lower()}"></a>', fm


def test_sections_are_in_order() -> None:
    assert sorted(headings(), key=lambda fm: headings()[fm][0]) == ALL_FMS


def test_every_rule_code_mentioned_exists() -> None:
    assert set(RULE_CODE.findall(TEXT)) - set(REGISTRY) == set()


def test_every_rule_link_points_at_the_rule_page() -> None:
    codes = linked_codes(TEXT)
    assert {
        code for code in codes if not (REPO / "docs" / "rules" / f"{code}.md").is_file()
    } == set()
    # every code the page mentions is linked somewhere
    assert set(RULE_CODE.findall(TEXT)) == codes


def test_table_lists_exactly_fm01_to_fm30() -> None:
    rows = table()
    assert [fm for fm, _anchor, _title, _rules in rows] == ALL_FMS
    assert [anchor for _fm, anchor, _title, _rules in rows] == [fm.lower() for fm in ALL_FMS]


def test_table_titles_match_the_headings() -> None:
    titles = {fm: title for fm, (_index, title) in headings().items()}
    assert {fm: title for fm, _anchor, title, _rules in table()} == titles


@pytest.mark.parametrize("fm", ALL_FMS)
def test_section_has_every_part(fm: str) -> None:
    section = sections()[fm]
    assert [label for label in PARTS if label not in section] == []
    positions = [section.index(label) for label in PARTS]
    assert positions == sorted(positions), fm


@pytest.mark.parametrize("fm", ALL_FMS)
def test_detected_by_is_the_rules_that_cite_it(fm: str) -> None:
    expected = cited_by_rules().get(fm, set())
    detected = part(sections()[fm], "**Detected by:**")
    assert linked_codes(detected) == expected
    if not expected:
        assert detected == NO_RULE


def test_table_rules_are_the_rules_that_cite_each_failure_mode() -> None:
    cited = cited_by_rules()
    got = {fm: linked_codes(cell) for fm, _anchor, _title, cell in table()}
    assert got == {fm: cited.get(fm, set()) for fm in ALL_FMS}
    assert {fm for fm, _anchor, _title, cell in table() if cell == "none yet"} == {
        fm for fm in ALL_FMS if fm not in cited
    }


@pytest.mark.parametrize("fm", ALL_FMS)
def test_public_reports_are_owner_repo_number(fm: str) -> None:
    reports = part(sections()[fm], "**Public reports:**").split(", ")
    assert [r for r in reports if not REPORT.match(r)] == []
    assert len(reports) == len(set(reports)), fm
