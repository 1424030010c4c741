"""What a user reads: the README lists every rule code (generated from the catalogue), points
at things that exist, and the product text speaks in words a user can place."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from patchaudit._docs import README_BEGIN, README_END, readme_codes
from patchaudit._version import __version__
from patchaudit.rules import REGISTRY, all_rules

from .conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
POST = '"gevent: the Good, the Bad, the Ugly"'
# Words from how the work was organised, meaningless to a user; "the post" is the one source
# named in product text, by its title.
INTERNAL = re.compile(r"\b(?:the|our|this) (?:seed|lead|brief)\b|\b(?:seed|lead|brief)'s\b", re.I)


def _product_text() -> dict[str, str]:
    """README, docs, messages and comments of the package, the packaging metadata."""
    files = [REPO / n for n in ("README.md", "CHANGELOG.md", "pyproject.toml")]
    files.append(REPO / ".pre-commit-hooks.yaml")
    files += sorted((REPO / "docs").rglob("*.md")) + sorted((REPO / "patchaudit").rglob("*.py"))
    files += sorted((REPO / "patchaudit").rglob("*.toml"))
    return {p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8") for p in files}


def test_the_readme_lists_every_code_as_the_catalogue_has_it() -> None:
    begin, end = README.index(README_BEGIN), README.index(README_END) + len(README_END)
    assert README[begin:end] == readme_codes(all_rules()), (
        "README.md is stale: run `python -m patchaudit._docs`"
    )
    listed = set(re.findall(r"\[(MPA\d{3})\]\(docs/rules/(MPA\d{3})\.md\)", README[begin:end]))
    assert {code for code, page in listed if code == page} == set(REGISTRY)
    for code in REGISTRY:
        assert (REPO / "docs" / "rules" / f"{code}.md").is_file(), code


def test_product_text_has_no_internal_words() -> None:
    found = [
        f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)!r}"
        for name, text in _product_text().items()
        for match in INTERNAL.finditer(text)
    ]
    assert found == []


def test_the_post_is_named_by_its_title() -> None:
    """Wherever the product refers to the Mixpanel post it gives the exact title."""
    for name, text in _product_text().items():
        for match in re.finditer(r"Good, the Bad", text, re.I):
            start = match.start() - len('"gevent: the ')
            assert text[start : start + len(POST)] == POST, (name, text[start : start + 60])
    assert f"## Load testing, as in {POST}" in README


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)


def test_the_pre_commit_example_names_this_release_and_the_tag_has_it() -> None:
    """The README's `rev:` is this version's tag, with a CHANGELOG entry; the tag, where this
    clone has tags, is a commit whose package is that version."""
    (rev,) = re.findall(r"^\s*rev: (\S+)", README, re.M)
    assert rev == f"v{__version__}"
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(__version__)} \(\d{{4}}-\d\d-\d\d\)$", changelog, re.M)
    if not _git("tag", "--list").stdout.strip():
        pytest.skip("this clone came without tags")
    known = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    assert known.returncode == 0, f"README's pre-commit example names {rev!r}, not a tag here"
    tagged = _git("show", f"{rev}:patchaudit/_version.py").stdout
    assert f'__version__ = "{__version__}"' in tagged


def test_the_readme_installs_from_the_clone_until_there_is_a_release() -> None:
    for line in README.splitlines():
        assert "pip install 'patchaudit[" not in line, line  # no index release to install from
    assert "pip install '.[harness,plot]'" in README
    assert Path(REPO / "patchaudit" / "harness" / "demo_apps" / "stale-sleep" / "bad").is_dir()
