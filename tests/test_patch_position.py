"""Where the patch call sits: the MPA101/MPA102 fix that moves it to the top (docs/fixes.md).

The before/after pairs are in fixtures/fixes/ and run by tests/test_fixes.py; these are the
cases where the move is exact or must not be offered.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchaudit._findings import Category, Finding, Severity
from patchaudit.fixes._model import Source
from patchaudit.fixes.patch_position import move_patch_to_top

from .conftest import run_cli, write_project

LATE = "import logging.handlers\n"  # loads socket, select, queue: MPA102 on line 1


def _findings(project: Path) -> list[tuple[str, int, str | None]]:
    result = run_cli("check", "--format", "json", ".", cwd=project)
    assert result.returncode in (0, 1), result.stderr
    return [
        (f["rule"], f["line"], (f.get("autofix") or {}).get("applicability"))
        for f in json.loads(result.stdout)["findings"]
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # statements that are not a module-level statement of their own: no fix
        (LATE + "from gevent import monkey\nif True:\n    monkey.patch_all()\n", None),
        (
            LATE
            + "from gevent import monkey\ntry:\n    monkey.patch_all()\n"
            + "except OSError:\n    pass\n",
            None,
        ),
        (LATE + "from gevent import monkey\nimport os; monkey.patch_all()\n", None),
        # the call's name is bound again between the top and the call (a parameter counts)
        (
            LATE
            + "from gevent import monkey\ndef f(monkey):\n    return monkey\nmonkey.patch_all()\n",
            None,
        ),
        # self-contained: the one-line form, a dotted import, an alias
        (LATE + "from gevent import monkey; monkey.patch_all()\n", "unsafe"),
        (LATE + "import gevent.monkey\ngevent.monkey.patch_all()\n", "unsafe"),
        (LATE + "from gevent.monkey import patch_all as patch\npatch()\n", "unsafe"),
    ],
)
def test_the_move_is_offered_only_where_it_is_exact(
    tmp_path: Path, source: str, expected: str | None
) -> None:
    project = write_project(tmp_path, {"app.py": source})
    assert _findings(project) == [("MPA102", 1, expected)]


def test_the_one_line_form_moves_whole(tmp_path: Path) -> None:
    project = write_project(
        tmp_path, {"app.py": LATE + "from gevent import monkey; monkey.patch_all()  # first\n"}
    )
    result = run_cli("check", "--fix", "--unsafe-fixes", ".", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "app.py").read_text() == (
        "from gevent import monkey; monkey.patch_all()  # first\n\n" + LATE
    )


def test_moved_lines_a_blank_line_apart_leave_no_blank_line_behind(tmp_path: Path) -> None:
    """The import and the call, with only a blank line between them, go as one block: no two
    deletions take the same blank line, and none is left at the end of the file. One blank
    line follows the moved call."""
    source = LATE + "\nfrom gevent import monkey\n\nmonkey.patch_all()\n"
    project = write_project(tmp_path, {"app.py": source})
    result = run_cli("check", "--fix", "--unsafe-fixes", ".", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = "from gevent import monkey\nmonkey.patch_all()\n\n" + LATE
    assert (project / "app.py").read_text() == expected


def test_eventlet_monkey_patch_moves_too(tmp_path: Path) -> None:
    project = write_project(
        tmp_path, {"app.py": LATE + "import eventlet\n\neventlet.monkey_patch()\n"}
    )
    assert ("MPA102", 1, "unsafe") in _findings(project)
    run_cli("check", "--fix", "--unsafe-fixes", ".", cwd=project)
    assert (project / "app.py").read_text() == "import eventlet\neventlet.monkey_patch()\n\n" + LATE


def _finding(patch_call: str) -> Finding:
    return Finding(
        rule="MPA102",
        category=Category.PATCH_ORDER,
        severity=Severity.WARNING,
        path="app.py",
        line=1,
        column=1,
        message="",
        fix="",
        evidence={"patch_call": patch_call},
    )


def test_a_patch_in_another_module_is_not_moved() -> None:
    source = Source.parse((LATE + "from gevent import monkey\nmonkey.patch_all()\n").encode())
    assert source is not None
    fix = move_patch_to_top(source, _finding("app.py:3:1"))
    assert fix is not None and [e.content for e in fix.edits] == [
        "from gevent import monkey\nmonkey.patch_all()\n\n",
        "",
    ]
    assert move_patch_to_top(source, _finding("wsgi.py:3:1")) is None
