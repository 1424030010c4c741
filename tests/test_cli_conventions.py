"""ruff's command-line conventions, end to end in subprocesses on ``fixtures/cli/conventions``:
``--exit-zero``, ``--statistics``, ``--show-settings``, reading stdin, ``--add-noqa`` and the
JSON fields ``name``, ``url``, ``end_line``, ``end_column``.

The fixture's expectation comments (``# MPA201``) say what is reported; every assertion is
derived from them, so the fixture and the tests cannot drift apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from patchaudit.rules import REGISTRY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from ._expect import expectations_in, mismatches, places
from .conftest import FIXTURES, isolated_copy, run_cli

FIXTURE = FIXTURES / "cli" / "conventions"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return isolated_copy(FIXTURE, tmp_path)


def _json(result: subprocess.CompletedProcess[str]) -> dict:
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def test_json_findings_carry_name_url_and_end_position(project: Path) -> None:
    result = run_cli("check", "--format", "json", ".", cwd=project)
    assert result.returncode == 1, result.stderr
    document = _json(result)
    assert document["version"] == 1
    findings = document["findings"]
    assert mismatches(expectations_in(project), findings) == []
    for finding in findings:
        rule = REGISTRY[finding["rule"]]
        assert finding["name"] == rule.name
        assert finding["url"] == (
            f"https://github.com/patchaudit/patchaudit/blob/main/docs/rules/{rule.code}.md"
        )
        assert (FIXTURES.parent / rule.docs_path).is_file()  # the page the url names exists
    # `from time import sleep` on line 1: the whole statement, end column exclusive
    (sleep,) = [f for f in findings if (f["path"], f["line"]) == ("app.py", 1)]
    assert (sleep["end_line"], sleep["end_column"]) == (1, len("from time import sleep") + 1)
    # an import over three lines ends on its closing parenthesis
    (select,) = [f for f in findings if (f["path"], f["line"]) == ("app.py", 3)]
    assert (select["end_line"], select["end_column"]) == (5, 2)


def test_exit_zero_keeps_the_findings_and_exits_0(project: Path) -> None:
    failing = run_cli("check", "--format", "concise", ".", cwd=project)
    passing = run_cli("check", "--format", "concise", "--exit-zero", ".", cwd=project)
    assert (failing.returncode, passing.returncode) == (1, 0), passing.stderr
    assert passing.stdout == failing.stdout
    # + "Found ..." and ruff's "[*] 1 fixable with the `--fix` option ..."
    assert len(passing.stdout.splitlines()) == len(expectations_in(project)) + 2
    # stronger than --fail-on, as in ruff; a usage error still exits 2
    both = run_cli("check", "--fail-on", "info", "--exit-zero", ".", cwd=project)
    assert both.returncode == 0
    bad = run_cli("check", "--exit-zero", "--select", "NOPE", ".", cwd=project)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_statistics_count_code_name_by_count(project: Path) -> None:
    counts = Counter(e.code for e in expectations_in(project))
    expected = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    result = run_cli("check", "--statistics", ".", cwd=project)
    assert result.returncode == 1, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [[str(n), code, REGISTRY[code].name] for code, n in expected]
    as_json = run_cli("check", "--statistics", "--format", "json", ".", cwd=project)
    assert _json(as_json) == [
        {"code": code, "name": REGISTRY[code].name, "count": n} for code, n in expected
    ]
    sarif = run_cli("check", "--statistics", "--format", "sarif", ".", cwd=project)
    assert sarif.returncode == 2 and sarif.stdout == ""
    assert sarif.stderr.strip() == (
        "patchaudit: error: --statistics prints a table or JSON, not --format sarif"
    )


def test_expectations_are_what_the_fixture_says(project: Path) -> None:
    # the fixture itself: both files report, one line holds another linter's noqa
    assert {p for _, p, _ in places(expectations_in(project))} == {"app.py", "b.py"}
    assert "# noqa: E402" in (project / "app.py").read_text()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_show_settings_prints_the_resolved_table_and_exits_0(project: Path) -> None:
    args = ("check", "--show-settings", "--ignore", "MPA5", "--extend-exclude", "build/", ".")
    result = run_cli(*args, cwd=project)
    assert result.returncode == 0, result.stderr  # the project has findings: none are looked for
    assert result.stderr == ""
    assert not (project / ".patchaudit_cache").exists()
    table = tomllib.loads(result.stdout)["tool"]["patchaudit"]
    assert table["select"] == sorted(c for c in REGISTRY if not c.startswith("MPA5"))
    assert table["per-file-ignores"] == {"scripts/*": ["MPA105"]}  # from pyproject.toml
    assert (table["exclude"], table["fail-on"], table["max-file-size"]) == (
        ["build/"],
        "warning",
        4 * 1024 * 1024,
    )
    # the text reads back as the same settings (`--config` on a copy of it)
    (project / "shown.toml").write_text(result.stdout)
    again = run_cli(
        "check", "--show-settings", "--format", "json", "--config", "shown.toml", ".", cwd=project
    )
    document = _json(again)
    assert document["settings"] == table
    assert document["config_file"] == "shown.toml"
    assert document["root"] == str(project)


def test_add_noqa_silences_every_finding_and_twice_adds_nothing(project: Path) -> None:
    expected = expectations_in(project)
    before = (project / "app.py").read_text()
    first = run_cli("check", "--add-noqa", ".", cwd=project)
    lines = {(e.path, e.line) for e in expected}
    files = {e.path for e in expected}
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"added {len(expected)} `# noqa` code(s) on {len(lines)} lines in {len(files)} files\n"
    )
    assert first.stderr == ""
    for expectation in expected:  # each reported line names its code in a noqa
        text = (project / expectation.path).read_text().splitlines()[expectation.line - 1]
        assert "# noqa: " in text and expectation.code in text.split("# noqa: ", 1)[1]
    # merged with another linter's noqa, not a second comment
    assert (
        "from socket import socket  # noqa: E402, MPA201  # MPA201"
        in (project / "app.py").read_text()
    )
    assert before.count("\n") == (project / "app.py").read_text().count("\n")
    clean = run_cli("check", "--format", "json", ".", cwd=project)
    assert clean.returncode == 0 and _json(clean)["findings"] == []
    snapshot = _files(project / "scripts") | {"app.py": (project / "app.py").read_bytes()}
    second = run_cli("check", "--add-noqa", ".", cwd=project)
    assert (second.returncode, second.stdout) == (
        0,
        "added 0 `# noqa` code(s) on 0 lines in 0 files\n",
    )
    assert _files(project / "scripts") | {"app.py": (project / "app.py").read_bytes()} == snapshot


def test_add_noqa_keeps_line_endings_and_skips_lines_a_comment_cannot_end(tmp_path: Path) -> None:
    project = tmp_path / "crlf"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.patchaudit]\n")
    source = (
        b"from time import \\\n    sleep\r\n"  # a backslash: no comment can go on line 1
        b"from socket import socket  # keep\r\n"
        b'x = """\r\n""" ; from select import select\r\n'  # reported on the string's last line
        b"from gevent import monkey\r\nmonkey.patch_all()\r\n"
    )
    (project / "app.py").write_bytes(source)
    (project / "app.py").chmod(0o640)
    report = _json(run_cli("check", "--format", "json", ".", cwd=project))
    reported = sorted((f["line"], f["rule"]) for f in report["findings"])
    assert {line for line, _ in reported} == {1, 3, 5}
    result = run_cli("check", "--add-noqa", ".", cwd=project)
    assert result.returncode == 0, result.stderr
    on_line_1 = [rule for line, rule in reported if line == 1]
    assert result.stderr.splitlines() == [
        f"patchaudit: warning: not silenced: app.py:1: {', '.join(on_line_1)}: the line "
        "continues on the next (a backslash or a string): no comment can go at its end"
    ]
    codes_3 = ", ".join(sorted(rule for line, rule in reported if line == 3))
    codes_5 = ", ".join(sorted(rule for line, rule in reported if line == 5))
    assert (project / "app.py").read_bytes() == source.replace(
        b"# keep\r\n", f"# keep  # noqa: {codes_3}\r\n".encode()
    ).replace(b"select\r\n", f"select  # noqa: {codes_5}\r\n".encode())
    assert (project / "app.py").stat().st_mode & 0o777 == 0o640
    left = _json(run_cli("check", "--format", "json", ".", cwd=project))
    assert sorted((f["line"], f["rule"]) for f in left["findings"]) == [
        (1, rule) for rule in on_line_1
    ]


def test_stdin_is_checked_as_the_file_it_names(project: Path) -> None:
    config = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["patchaudit"]
    ignored = set(config["per-file-ignores"]["scripts/*"])
    # b.py's source given as scripts/tool.py (an editor's unsaved buffer): its findings, there,
    # less what per-file-ignores drops for scripts/
    expected = {
        (e.code, "scripts/tool.py", e.line)
        for e in expectations_in(project)
        if e.path == "b.py" and e.code not in ignored
    }
    assert expected and ignored
    before = _files(project)
    assert _stdin_findings(project, "scripts/tool.py") == expected
    assert _files(project) == before  # no cache, nothing written; the file on disk is unchanged
    assert not (project / ".patchaudit_cache").exists()
    # without a name the source is `-`
    plain = subprocess.run(
        [sys.executable, "-m", "patchaudit", "check", "-", "--format", "concise"],
        cwd=project,
        input="from time import sleep\nfrom gevent import monkey\nmonkey.patch_all()\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 1 and plain.stdout.startswith("-:1:1: MPA201 "), plain.stderr
    # a name in a folder that does not exist yet (a new buffer): checked the same way
    assert _stdin_findings(project, "new/tool.py") == {
        (e.code, "new/tool.py", e.line) for e in expectations_in(project) if e.path == "b.py"
    }
    assert not (project / "new").exists()


def _stdin_findings(project: Path, name: str) -> set[tuple[str, str, int]]:
    """(rule, path, line) of b.py's source checked from stdin as ``name``."""
    result = subprocess.run(
        [sys.executable, "-m", "patchaudit", "check", "-", "--stdin-filename", name]
        + ["--format", "json"],
        cwd=project,
        input=(project / "b.py").read_text(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    return {(f["rule"], f["path"], f["line"]) for f in _json(result)["findings"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-", "app.py"), "`-` (read stdin) cannot be combined with other paths"),
        (
            ("app.py", "--stdin-filename", "x.py"),
            "--stdin-filename names the source read from stdin: use "
            "`patchaudit check - --stdin-filename PATH`",
        ),
        (("-", "--add-noqa"), "--add-noqa edits files; it cannot edit what stdin gives"),
        (
            ("-", "--stdin-filename", "scripts"),
            "--stdin-filename must name a file, not the folder scripts",
        ),
    ],
)
def test_stdin_usage_errors(project: Path, args: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "patchaudit", "check", *args],
        cwd=project,
        input="import os\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"patchaudit: error: {message}\n"


def test_the_audit_takes_statistics_and_exit_zero(tmp_path: Path) -> None:
    # one real audit (a child process serving requests): the counts are the app's expectations
    project = isolated_copy(FIXTURES / "apps" / "MPA251" / "bad", tmp_path)
    options = tomllib.loads((project / "audit.toml").read_text())
    counts = Counter(e.code for e in expectations_in(project))
    expected = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    assert len(expected) >= 2  # MPA201 (confirmed by MPA251), MPA851, MPA852
    args = ["audit", options["target"], "--statistics", "--exit-zero"]
    args += ["--requests", str(options["requests"]), "--concurrency", str(options["concurrency"])]
    result = run_cli(*args, cwd=project, timeout=180)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [[str(n), code, REGISTRY[code].name] for code, n in expected]
    sarif = run_cli("audit", options["target"], "--statistics", "--format", "sarif", cwd=project)
    assert (sarif.returncode, sarif.stdout) == (2, "")  # refused before anything is imported
