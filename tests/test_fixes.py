"""Fixes (docs/fixes.md): each fixture's `before.py` becomes its `after.py` under `check --fix`.

For every case: the findings of `before.py` are exactly its expectation comments and carry a fix
of the stated applicability; `--diff` shows the change and writes nothing; a safe-only `--fix`
leaves an unsafe fix alone; `--fix` gives `after.py`, which compiles and no longer has the
findings; a second `--fix` changes nothing.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from patchaudit.fixes import Applicability, Fix
from patchaudit.fixes._apply import apply_fixes
from patchaudit.fixes._model import Source

from ._expect import expectations_in, mismatches
from .conftest import FIXTURES, run_cli, write_project

CASES = FIXTURES / "fixes"
#: case -> the applicability of the fix every expected finding carries
APPLICABILITY: dict[str, str | None] = {
    "MPA105-positional": "safe",
    "MPA301-thread-false": "unsafe",
    "MPA201-from-import": "unsafe",
    "MPA201-not-a-call": "display-only",
    "MPA704-import": "safe",
    "MPA704-from-import": "safe",
    "MPA704-submodule": "display-only",
    "MPA501-handlers": "unsafe",
    "MPA501-elsewhere": "display-only",
    "MPA701-after-patch": "unsafe",
    "MPA102-plain": "unsafe",
    "MPA101-docstring": "unsafe",
    "MPA102-argument-bound-late": None,  # no fix offered: after.py is before.py
    "MPA109-float-to-top": "safe",
}


def test_every_fixture_is_a_case() -> None:
    assert {p.name for p in CASES.iterdir() if p.is_dir()} == set(APPLICABILITY)


def _project(tmp_path: Path, case: str) -> Path:
    project = write_project(tmp_path / "project", {})
    shutil.copy(CASES / case / "before.py", project / "app.py")
    if (CASES / case / "pyproject.toml").exists():  # the case's settings (an isort section)
        shutil.copy(CASES / case / "pyproject.toml", project / "pyproject.toml")
    return project


def _json(project: Path, *options: str) -> dict:
    result = run_cli("check", "--format", "json", *options, ".", cwd=project)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("case", sorted(APPLICABILITY))
def test_fix_turns_before_into_after(tmp_path: Path, case: str) -> None:
    project = _project(tmp_path, case)
    app = project / "app.py"
    before = app.read_text()
    after = (CASES / case / "after.py").read_text()
    applicability = APPLICABILITY[case]
    unsafe = ["--unsafe-fixes"] if applicability != "safe" else []

    findings = _json(project)["findings"]
    expected = expectations_in(project)
    assert expected and mismatches(expected, findings) == []
    assert {(f.get("autofix") or {}).get("applicability") for f in findings} == {applicability}

    diff = run_cli("check", "--diff", *unsafe, ".", cwd=project)
    assert app.read_text() == before
    assert diff.returncode == (0 if before == after else 1), diff.stderr
    assert bool(diff.stdout) == (before != after)
    if applicability == "unsafe":  # a safe-only --fix leaves it alone, and says so
        safe_only = run_cli("check", "--fix", ".", cwd=project)
        # what remains fails the run unless it is only info findings (MPA501)
        assert safe_only.returncode == int(any(f["severity"] != "info" for f in findings))
        assert "more with --unsafe-fixes" in safe_only.stderr
        assert app.read_text() == before

    fixed = run_cli("check", "--fix", *unsafe, "--format", "concise", ".", cwd=project)
    assert app.read_text() == after, fixed.stderr
    ast.parse(after)
    remaining = {(f["rule"], f["line"]) for f in _json(project)["findings"]}
    if before != after:
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert remaining.isdisjoint({(e.code, e.line) for e in expected})

    again = run_cli("check", "--fix", *unsafe, ".", cwd=project)
    assert app.read_text() == after
    assert "fixed 0 finding(s)" in again.stderr


def test_fix_object_in_json_and_sarif(tmp_path: Path) -> None:
    project = _project(tmp_path, "MPA105-positional")
    (finding,) = _json(project)["findings"]
    assert finding["fix"].startswith("Pass keywords only")  # version 1's prose stays
    assert finding["autofix"] == {
        "applicability": "safe",
        "message": "Pass the arguments as keywords",
        "edits": [
            {
                "content": "socket=",
                "location": {"row": 3, "column": 18},
                "end_location": {"row": 3, "column": 18},
            },
            {
                "content": "dns=",
                "location": {"row": 3, "column": 24},
                "end_location": {"row": 3, "column": 24},
            },
        ],
    }
    sarif = run_cli("check", "--format", "sarif", ".", cwd=project)
    (result,) = json.loads(sarif.stdout)["runs"][0]["results"]
    (change,) = result["fixes"][0]["artifactChanges"]
    assert change["artifactLocation"]["uri"] == "app.py"
    assert change["replacements"][0] == {
        "deletedRegion": {"startLine": 3, "startColumn": 18, "endLine": 3, "endColumn": 18},
        "insertedContent": {"text": "socket="},
    }


def test_fix_only_prints_only_the_counts(tmp_path: Path) -> None:
    project = _project(tmp_path, "MPA201-not-a-call")
    (project / "other.py").write_text((CASES / "MPA105-positional" / "before.py").read_text())
    result = run_cli("check", "--fix-only", ".", cwd=project)
    assert result.returncode == 0
    assert result.stdout == "patchaudit: fixed 1 finding(s), 1 remaining\n"
    assert "patch_all(socket=True, dns=True)" in (project / "other.py").read_text()


def test_show_programs_with_fix_is_a_usage_error(tmp_path: Path) -> None:
    project = _project(tmp_path, "MPA105-positional")
    result = run_cli("check", "--fix", "--show-programs", ".", cwd=project)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "patchaudit: error: --show-programs cannot be combined with --fix, --diff or --fix-only"
    ]
    before = (CASES / "MPA105-positional" / "before.py").read_text()
    assert (project / "app.py").read_text() == before


def _insert(source: Source, offset: int, text: str) -> Fix:
    return Fix(Applicability.SAFE, text, (source.edit(offset, offset, text),))


def test_an_overlapping_fix_waits_for_the_next_pass() -> None:
    data = b"x = (1)\n"
    source = Source.parse(data)
    assert source is not None
    first = Fix(Applicability.SAFE, "a", (source.edit(4, 7, "2"),))
    second = Fix(Applicability.SAFE, "b", (source.edit(5, 6, "3"),))
    third = _insert(source, 0, "# c\n")
    assert apply_fixes(data, [first, second, third]) == (b"# c\nx = 2\n", 2)


def test_a_fix_that_would_break_the_file_is_not_applied() -> None:
    data = b"x = 1\n"
    source = Source.parse(data)
    assert source is not None
    assert apply_fixes(data, [_insert(source, 0, "(")]) == (data, 0)


def test_locations_count_characters_not_bytes() -> None:
    source = Source.parse("s = 'é'; t = 1\n".encode())
    assert source is not None
    offset = source.start(source.tree.body[1])  # `t`: byte 10, the 10th character (1-based)
    assert (offset, source.location(offset)) == (10, (1, 10))


PATCH = "from gevent import monkey\nmonkey.patch_all()\n"


@pytest.mark.parametrize(
    ("source", "rule", "applicability"),
    [
        # MPA201: rebound, exported by name, or the module's name means something else: no fix
        ("from time import sleep\n" + PATCH + "sleep = None\n", "MPA201", None),
        ("from time import sleep\n" + PATCH + "__all__ = ['sleep']\n", "MPA201", None),
        ("from time import sleep\n" + PATCH + "def f(time):\n    sleep(time)\n", "MPA201", None),
        (
            "from time import sleep\n" + PATCH + "def f():\n    return f'{sleep(1)}'\n",
            "MPA201",
            "display-only",
        ),
        ("from time import sleep\n" + PATCH + "sleep(0)\n", "MPA201", "unsafe"),
        # MPA105: `*args` cannot be named
        (
            "from gevent import monkey\nargs = (True,)\nmonkey.patch_all(True, *args)\n",
            "MPA105",
            None,
        ),
        # MPA301: the options come from a dict, or a comment would be lost
        (
            "from gevent import monkey\nmonkey.patch_all(\n  thread=False,  # keep\n  os=True)\n",
            "MPA301",
            None,
        ),
        (
            "from gevent import monkey\nmonkey.patch_all(thread=False, os=False)\n",
            "MPA301",
            "unsafe",
        ),
        (
            "from gevent import monkey\nOPTIONS = {'thread': False}\nmonkey.patch_all(**OPTIONS)\n",
            "MPA301",
            None,
        ),
    ],
)
def test_a_fix_is_offered_only_where_it_is_exact(
    tmp_path: Path, source: str, rule: str, applicability: str | None
) -> None:
    project = write_project(tmp_path / "project", {"app.py": source})
    findings = [f for f in _json(project)["findings"] if f["rule"] == rule]
    assert findings, source
    assert {(f.get("autofix") or {}).get("applicability") for f in findings} == {applicability}


def test_reports_mark_what_fix_would_fix_as_ruff_does(tmp_path: Path) -> None:
    """`[*]` on a finding `--fix` fixes, and ruff's closing line with what waits for
    `--unsafe-fixes`; nothing of it for findings without a fix."""
    project = write_project(
        tmp_path,
        {
            "app.py": "from gevent import monkey\n\nmonkey.patch_all(True, True)\n",
            "b.py": "from time import sleep\nfrom gevent import monkey\n\nmonkey.patch_all()\n"
            "sleep(1)\n",
        },
    )
    concise = run_cli("check", "--format", "concise", ".", cwd=project)
    lines = concise.stdout.splitlines()
    assert lines[0].startswith("app.py:3:1: MPA105 [*] `patch_all()` with 2 positional")
    assert lines[1].startswith("b.py:1:1: MPA201 `from time import sleep`")  # unsafe: no [*]
    assert lines[-1] == (
        "[*] 1 fixable with the `--fix` option "
        "(1 hidden fix can be enabled with the `--unsafe-fixes` option)."
    )
    full = run_cli("check", "--format", "full", ".", cwd=project)
    assert "warning[MPA105] [*] patch-all-positional-arguments:" in full.stdout
    assert "error[MPA201] stale-module-binding:" in full.stdout
    assert full.stdout.splitlines()[-1] == lines[-1]
    (project / "app.py").write_text("from gevent import monkey\n\nmonkey.patch_all()\n")
    (project / "b.py").unlink()
    clean = run_cli("check", "--format", "concise", ".", cwd=project)
    assert "fix" not in clean.stdout
