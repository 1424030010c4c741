"""The rule catalogue is complete and consistent, and its docs are generated from it."""

from __future__ import annotations

import re

import pytest

from patchaudit import Category, Severity
from patchaudit._docs import rule_page, rules_index
from patchaudit.rules import REGISTRY, all_rules

from .conftest import FIXTURES, REPO

FLAKE8_CODE = re.compile(r"^[A-Z]{1,3}[0-9]{0,3}$")  # flake8's VALID_CODE_PREFIX
FM_IDS = set(
    re.findall(r"### (FM-\d\d)", (REPO.parent / "shared/knowledge/failure-modes.md").read_text())
    if (REPO.parent / "shared/knowledge/failure-modes.md").exists()
    else []
)


def test_every_code_is_three_letters_three_digits_and_flake8_accepts_it() -> None:
    for code in REGISTRY:
        assert re.fullmatch(r"MPA\d{3}", code), code
        assert FLAKE8_CODE.match(code), code


def test_codes_are_grouped_by_family() -> None:
    family = {
        "0": {Category.PARSE_ERROR},
        "1": {Category.PATCH_ORDER},
        "2": {Category.STALE_REFERENCE},
        "3": {Category.PARTIAL_PATCH, Category.LIBRARY_PATCHES},
        "4": {Category.EVENTLET_COEXISTENCE},
        "5": {Category.UNPATCHED_SIGNAL, Category.UNPATCHED_QUEUE},
        "6": {Category.FORK_AFTER_PATCH},
        "7": {Category.INCOMPATIBLE_LIBRARY},
        "8": {Category.BLOCKING_CALL},
    }
    for rule in all_rules():
        assert rule.category in family[rule.code[3]], rule.code


def test_names_are_unique_kebab_case() -> None:
    names = [r.name for r in all_rules()]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", name), name


def test_every_category_of_the_fixed_vocabulary_is_used() -> None:
    assert {r.category for r in all_rules()} == set(Category)
    assert [c.value for c in Category] == [
        "patch-order",
        "stale-reference",
        "eventlet-coexistence",
        "unpatched-signal",
        "unpatched-queue",
        "blocking-call",
        "incompatible-library",
        "fork-after-patch",
        "partial-patch",
        "library-patches",
        "parse-error",
    ]


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.code)
def test_rule_has_complete_metadata(rule) -> None:
    assert isinstance(rule.severity, Severity)
    for text in (rule.summary, rule.message, rule.why, rule.fix, rule.bad, rule.good):
        assert text.strip(), rule.code
    assert rule.bad != rule.good
    if rule.category is not Category.PARSE_ERROR:
        assert rule.failure_modes, f"{rule.code} cites no FM-xx"
        assert any(fm in rule.why for fm in rule.failure_modes), (
            f"{rule.code}: why must cite its FM"
        )
    if FM_IDS:
        assert set(rule.failure_modes) <= FM_IDS, rule.code


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.code)
def test_rule_has_docs_page_matching_the_catalogue(rule) -> None:
    page = REPO / rule.docs_path
    assert page.exists(), f"{page} missing: run `python -m patchaudit._docs`"
    assert page.read_text() == rule_page(rule), f"{page} drifted: run `python -m patchaudit._docs`"


def test_no_stray_docs_pages_and_index_is_current() -> None:
    pages = {p.stem for p in (REPO / "docs/rules").glob("*.md")}
    assert pages == set(REGISTRY)
    assert (REPO / "docs/rules.md").read_text() == rules_index(all_rules())


def test_every_rule_has_a_fixture_folder() -> None:
    static = {code for code, rule in REGISTRY.items() if rule.kind != "runtime"}
    runtime = set(REGISTRY) - static
    assert {p.name for p in (FIXTURES / "rules").iterdir() if p.is_dir()} == static
    # A runtime rule shows in an app (`patchaudit TARGET`) or in a test suite (the pytest plugin).
    # `apps/run` holds the `patchaudit run` cases (one pair per launcher) and `apps/outcomes`
    # how a run went (errors, not a rule's findings): neither is one rule's apps.
    apps = {p.name for p in (FIXTURES / "apps").iterdir() if p.is_dir()} - {"run", "outcomes"}
    suites = {p.name for p in (FIXTURES / "suites").iterdir() if p.is_dir()}
    assert apps | suites == runtime
    assert not (apps | suites) - runtime
    for code in runtime:  # one that shows the problem and the same one fixed
        kind, marker = ("apps", "audit.toml") if code in apps else ("suites", "suite.toml")
        assert (FIXTURES / kind / code / "bad" / marker).is_file(), code
        assert (FIXTURES / kind / code / "fixed" / marker).is_file(), code
