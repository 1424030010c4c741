"""How the human output reads at 80 and 120 columns and in a pipe: the full report as
snapshots, doctor and the matrix by what must hold whatever the machine (no word split, the
commands and paragraphs whole), and `rules CODE` rendered on a terminal.

Regenerate the snapshots after an intended change with
``PATCHAUDIT_UPDATE_SNAPSHOTS=1 pytest tests/test_output_layout.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from patchaudit._gevent_patches import load_patch_lists
from patchaudit._matrix._build import build_matrix
from patchaudit._matrix._render import _replacement_text, render
from patchaudit.doctor import render_table, run_checks

from ._terminal import run_on_a_terminal
from .conftest import FIXTURES, REPO, run_cli
from .test_doctor import fake_proc

SNAPSHOTS = REPO / "tests" / "snapshots"
CHECK = ["check", "examples/shop", "--fail-on", "never", "--format", "full"]
# Where `patchaudit check` may break an identifier in a table: after these, never inside.
JOINTS = "./(=,_"


def on_a_terminal(args: list[str], columns: int, cwd: Path) -> str:
    """What a user sees at ``columns`` wide, without colour, the status line erased."""
    code, out = run_on_a_terminal(
        [sys.executable, "-m", "patchaudit", *args],
        cwd=cwd,
        env={"NO_COLOR": "1"},
        columns=columns,
    )
    assert code == 0, out
    out = out.replace("\r\n", "\n")
    parts = out.split("\r\x1b[K")  # a live status line, then its erasure before the report
    return parts[0] + parts[-1] if len(parts) > 1 else out


def matches_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("PATCHAUDIT_UPDATE_SNAPSHOTS"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; review, rerun with the update variable"


@pytest.mark.parametrize("columns", [80, 120])
def test_full_report_on_a_terminal(columns: int) -> None:
    text = on_a_terminal(CHECK, columns, FIXTURES)
    assert "Traceback" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns
    # wrapped fix and evidence text hangs under the text after "= fix: "
    for before, after in zip(lines, lines[1:], strict=False):
        if before.startswith("   = ") and after and not after.startswith(("   = ", " ")):
            pytest.fail(f"a continuation line at column 0: {after!r}")
    matches_snapshot(f"full_{columns}.txt", text)


def test_full_report_in_a_pipe_is_not_wrapped() -> None:
    result = run_cli(*CHECK, cwd=FIXTURES, env={"NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # the longest fix and import chain stay one line each, however long
    assert any(len(line) > 100 for line in result.stdout.splitlines())
    assert (
        "   = evidence: import chain: examples/shop/shop/wsgi.py:5 -> "
        "examples/shop/shop/payments.py:3 -> urllib.request:88 -> http.client:1406 -> ssl\n"
    ) in result.stdout
    matches_snapshot("full_pipe.txt", result.stdout)


def test_underline_covers_the_expression() -> None:
    """Findings with an end underline it; those without get the statement or expression
    that starts at their column, read from the source."""
    text = run_cli(*CHECK, cwd=FIXTURES, env={"NO_COLOR": "1"}).stdout
    for source, marks in [
        (" 1 | import psycopg2", "   | ^^^^^^^^^^^^^^^"),  # MPA701: no end in the finding
        (" 10 |     QueueCls = queue.LifoQueue", "    |     " + "^" * 26),  # MPA202
        (" 14 |     with multiprocessing.Pool(4) as pool:", "    |          " + "^" * 23),
        (" 5 | monkey.patch_all(thread=False)", "   | " + "^" * 30),  # MPA301
    ]:
        assert f"{source}\n{marks}\n" in text, source


def test_summary_table_drops_names_rather_than_split_them() -> None:
    wide = on_a_terminal(CHECK, 80, FIXTURES)
    assert "│ patched-module-imported-before-patch │" in wide
    narrow = on_a_terminal(CHECK, 50, FIXTURES)
    table = narrow[narrow.index("Rule   ┃") :]
    assert "patched-mod" not in table and "Name" not in table
    assert "MPA102 │     0 │       1 │    0 │     1" in table
    assert max(len(line) for line in narrow.splitlines()) <= 50


def column_texts(text: str) -> list[str]:
    """Each table column's lines joined back: without a space after a line that ends at a
    joint (a name broken there on purpose), with one otherwise (so a name split anywhere
    else no longer matches)."""
    columns: dict[tuple[int, int], str] = {}
    for line in text.splitlines():
        cells = re.split("[│┃]", line)[1:-1]
        for i, cell in enumerate(cells):
            key, part = (len(cells), i), cell.strip()
            joined = columns.get(key, "")
            columns[key] = joined + ("" if joined.endswith(tuple(JOINTS)) else " ") + part
    return list(columns.values())


@pytest.mark.parametrize("width", [80, 120])
def test_doctor_table_keeps_words_whole(tmp_path: Path, width: int) -> None:
    results = run_checks(1000, 1024, fake_proc(tmp_path, net__core__somaxconn="128"))
    text = render_table(
        results, concurrency=1000, backlog=1024, rate=None, color=False, width=width
    )
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines if not line.startswith("  "))
    table = text[: text.index("└")]
    for r in results:
        assert f"│ {r.id} " in table, r.id  # the setting names never wrap
    words = {w for r in results for w in (r.value + " " + (r.needed or "")).split()}
    joined = column_texts(table)
    assert sorted(w for w in words if not any(w in column for column in joined)) == []


def test_doctor_in_a_pipe_keeps_paragraphs_and_commands_whole(tmp_path: Path) -> None:
    results = run_checks(1000, 1024, fake_proc(tmp_path, net__core__somaxconn="128"))
    text = render_table(
        results, concurrency=1000, backlog=1024, rate=None, color=False, width=100, wrap=False
    )
    lines = text.splitlines()
    for r in results:
        assert r.why in lines, r.id
    assert "  $ sudo sysctl -w net.core.somaxconn=1024" in lines


@pytest.mark.parametrize("width", [80, 120])
def test_matrix_table_breaks_names_only_between_parts(width: int) -> None:
    matrix = build_matrix(load_patch_lists())
    text = render(matrix, "table", width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    names = [f"{r['module']}.{r['name']}" for r in matrix["patched"]]
    names += [_replacement_text(r["replacement"]) for r in matrix["patched"]]
    names += [f"{r['module']}.{r['name']}" for r in matrix["removed"] + matrix["unrecorded"]]
    joined = column_texts(text)
    assert [n for n in names if not any(n in column for column in joined)] == []


def test_rule_page_is_rendered_on_a_terminal_only() -> None:
    shown = on_a_terminal(["rules", "MPA201"], 80, REPO)
    assert "Why this matters" in shown and "## Why" not in shown and "```" not in shown
    assert " • Default severity: error" in shown
    assert max(len(line) for line in shown.splitlines()) <= 80
    piped = run_cli("rules", "MPA201", cwd=REPO)
    assert piped.stdout == (REPO / "docs" / "rules" / "MPA201.md").read_text()


def test_rule_listing_wraps_summaries_under_themselves_on_a_terminal() -> None:
    from patchaudit.rules import all_rules

    shown = on_a_terminal(["rules"], 80, REPO).splitlines()
    assert max(len(line) for line in shown) <= 80
    starts = [line.split()[0] for line in shown if line and not line.startswith(" ")]
    assert starts == [r.code for r in all_rules()]
    indent = shown[0].index(all_rules()[0].summary.split()[0])
    assert all(line.startswith(" " * indent) for line in shown if line.startswith(" "))
    piped = run_cli("rules", cwd=REPO).stdout.splitlines()
    assert len(piped) == len(all_rules())  # one line per rule, however long
