"""The command-line layer shared by every command, end to end in subprocesses: a mistyped
command, colour on a terminal, the spellings of ``--format``, the usage line."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._terminal import run_on_a_terminal
from .conftest import run_cli

LATE_PATCH = "from time import sleep\nfrom gevent import monkey\nmonkey.patch_all()\n"
APP = LATE_PATCH + (
    "\n\ndef application(environ, start_response):\n"
    '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
    '    return [b"ok"]\n'
)
SGR = re.compile(r"\x1b\[([0-9;]*)m")
HAS_HDRH = importlib.util.find_spec("hdrh") is not None  # bench's built-in client


def _project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.patchaudit]\n")
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


# --- a mistyped command ------------------------------------------------------------------------

# Runs the real entry point and then lists what it loaded: a typo must be refused before the
# static check (or the runtime audit) is even imported.
PROBE = (
    "import sys\n"
    "from patchaudit.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "heavy = ('patchaudit.static', 'patchaudit.runtime', 'patchaudit.rules')\n"
    "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    "sys.exit(code)\n"
)


@pytest.mark.parametrize(
    "args, typo, meant",
    [
        (["chek", "."], "chek", "check"),
        (["rulez"], "rulez", "rules"),
        (["dcotor"], "dcotor", "doctor"),
    ],
)
def test_a_near_miss_of_a_command_is_one_line_and_runs_nothing(
    tmp_path: Path, args: list[str], typo: str, meant: str
) -> None:
    project = _project(tmp_path)
    cache = tmp_path / "cache"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATCHAUDIT_CACHE_DIR": str(cache)},
    )
    assert result.returncode == 2
    assert (
        result.stderr == f"patchaudit: error: unknown command {typo!r}; did you mean {meant!r}?\n"
    )
    assert result.stdout == "[]\n"  # neither the analyzer nor the audit was loaded
    assert not cache.exists()
    assert time.monotonic() - started < 30  # generous: a loaded machine, an interpreter start


def test_the_real_command_reports_the_near_miss_too(tmp_path: Path) -> None:
    result = run_cli("chek", ".", cwd=_project(tmp_path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "patchaudit: error: unknown command 'chek'; did you mean 'check'?\n"


def test_a_target_that_looks_like_a_command_is_still_audited(tmp_path: Path) -> None:
    # A path (or `pkg.mod:app`) is an app, however close to a command name it is.
    result = run_cli("chek.py", cwd=_project(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"patchaudit: error: target file not found: chek.py (looked in {tmp_path})"
    ]


def test_an_existing_folder_named_like_a_command_is_not_a_typo(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "chek").mkdir()
    result = run_cli("chek", "--timeout", "20", cwd=project)
    assert "did you mean" not in result.stderr
    assert "MPA201" in result.stdout  # audited: the project's findings are reported


def test_a_module_named_like_a_command_in_chdir_is_not_a_typo(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulez.py").write_text(APP)
    result = run_cli("rulez:application", "--chdir", "app", cwd=_project(tmp_path))
    assert "did you mean" not in result.stderr
    bare = run_cli("rulez", "--chdir", "app", "--no-static", "--timeout", "20", cwd=tmp_path)
    assert "did you mean" not in bare.stderr, bare.stderr


def test_an_importable_module_named_like_a_command_is_not_a_typo(tmp_path: Path) -> None:
    # installed (here: on PYTHONPATH), not in the folder the audit starts from
    library = tmp_path / "lib"
    library.mkdir()
    (library / "rulez.py").write_text(APP)
    (tmp_path / "work").mkdir()
    env = {"PYTHONPATH": str(library)}
    args = ("rulez", "--no-static", "--timeout", "20", "--requests", "1", "--format", "json")
    result = run_cli(*args, cwd=tmp_path / "work", env=env)
    assert "did you mean" not in result.stderr, result.stderr
    # audited: the probe imported it and saw its patch call
    patches = json.loads(result.stdout)["timeline"]["patches"]
    assert f"{library / 'rulez.py'}:3" in [patch["location"] for patch in patches]


# --- one way to report a usage error ----------------------------------------------------------

USAGE_ERRORS = [
    (["check", "--jobs", "0"], "--jobs must be at least 1"),
    (["app.py", "--requests", "0"], "--requests must be at least 1"),
    (["rules", "MPA999"], "unknown rule 'MPA999'"),
    (["matrix", "--format", "yaml"], "invalid choice: 'yaml'"),
    (["doctor", "--concurrency", "0"], "must be at least 1, got 0"),
    (["demo", "--shapes", "nope"], "unknown demo shape 'nope'"),
    (["demo", "--apps", "no-such-folder"], "demo apps not found"),  # was exit 1
    pytest.param(
        ["bench", "-n", "0"],
        "-n/--requests must be at least 1",
        marks=pytest.mark.skipif(not HAS_HDRH, reason="the harness extra is not installed"),
    ),
]


@pytest.mark.parametrize("args, fragment", USAGE_ERRORS)
def test_every_command_reports_a_usage_error_the_same_way(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = run_cli(*args, cwd=_project(tmp_path))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("patchaudit: error: ") and fragment in line, line


def test_doctor_on_its_own_is_the_same_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "patchaudit.doctor", "--concurrency", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "patchaudit: error: argument --concurrency/-c: must be at least 1, got 0 "
        "(see `patchaudit doctor --help`)\n"
    )


@pytest.mark.skipif(not HAS_HDRH, reason="the harness extra is not installed")
def test_bench_output_refuses_a_symlink_like_check(tmp_path: Path) -> None:
    (tmp_path / "target.json").write_text("keep\n")
    os.symlink(tmp_path / "target.json", tmp_path / "out.json")
    args = ["bench", "--servers", "threaded", "-c", "2", "-n", "10", "--format", "json"]
    result = run_cli(*args, "-o", "out.json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "patchaudit: error: refusing to write out.json"
    )
    assert (tmp_path / "target.json").read_text() == "keep\n"


# --- the usage line -------------------------------------------------------------------------------


def test_usage_line_names_the_target_form(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "usage: patchaudit [-h] [--version] [--debug] TARGET [audit options]"
    assert lines[1].strip().startswith("patchaudit [-h] [--version] [--debug] {check,audit,")


# --- --format md and markdown ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, first_line",
    [(["rules"], "| code | name | category | severity | summary |"), (["matrix"], "# What gevent")],
)
def test_md_and_markdown_are_one_format(
    tmp_path: Path, command: list[str], first_line: str
) -> None:
    short = run_cli(*command, "--format", "md", cwd=tmp_path)
    long = run_cli(*command, "--format", "markdown", cwd=tmp_path)
    assert (short.returncode, long.returncode) == (0, 0), short.stderr + long.stderr
    assert short.stdout == long.stdout
    assert short.stdout.startswith(first_line)
    help_text = run_cli(*command, "--help", cwd=tmp_path).stdout
    assert "markdown" in help_text and "md," not in help_text  # one spelling in help


def test_an_unknown_format_is_still_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("matrix", "--format", "yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("patchaudit: error: argument --format: invalid choice")
    assert result.stderr.count("\n") == 1


# --- colour on a terminal ---------------------------------------------------------------------


def _on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    return run_on_a_terminal([sys.executable, "-m", "patchaudit", *args], cwd=cwd, env=env)


def _colours(text: str) -> set[str]:
    """The SGR colour parameters (foreground, background, 256 and true colour) in ``text``;
    bold and italic are not colour."""
    found = set()
    for params in SGR.findall(text):
        for param in params.split(";"):
            if param.isdigit() and (30 <= int(param) <= 49 or 90 <= int(param) <= 107):
                found.add(param)
    return found


# (arguments, text the output must show, whether the plain output has no escape at all: bench's
# rich progress bar and table keep bold and cursor movement, which are not colour, and demo's
# status line erases itself)
COLOURING = [
    pytest.param(["check"], "MPA201", True, id="check"),
    pytest.param(["app:application"], "MPA201", True, id="audit"),
    pytest.param(["matrix"], "socket", True, id="matrix"),
    pytest.param(["doctor"], "net.core.somaxconn", True, id="doctor"),
    pytest.param(
        ["bench", "--servers", "threaded", "-c", "2", "-n", "20", "--max-time", "20"],
        "threaded",
        False,
        id="bench",
        marks=pytest.mark.skipif(not HAS_HDRH, reason="the harness extra is not installed"),
    ),
    pytest.param(
        ["demo", "--shapes", "stale-sleep", "-n", "4"],
        "stale-sleep",
        False,
        id="demo",
    ),
]


@pytest.mark.parametrize("args, content, no_escapes", COLOURING)
def test_no_color_is_honoured_on_a_terminal(
    tmp_path: Path, args: list[str], content: str, no_escapes: bool
) -> None:
    project = _project(tmp_path)
    _, styled = _on_a_terminal(args, project, {})
    assert "\x1b[" in styled, "a terminal should get colour (else the next checks prove nothing)"
    for env, flag in (({"NO_COLOR": "1"}, []), ({}, ["--no-color"])):
        _, plain = _on_a_terminal([*args, *flag], project, env)
        assert content in plain, plain
        assert not _colours(plain), (env, flag, plain)
        if no_escapes:
            assert "\x1b[" not in plain, (env, flag, plain)


@pytest.mark.parametrize("args", [["matrix"], ["doctor"], ["check"]])
def test_an_empty_no_color_does_not_count(tmp_path: Path, args: list[str]) -> None:
    _, coloured = _on_a_terminal(args, _project(tmp_path), {"NO_COLOR": ""})
    assert _colours(coloured)
