"""The command line end to end in subprocesses: exit codes, formats, colour and bad input."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_cli

GEVENT_APP = "from gevent import monkey\nmonkey.patch_all()\nimport signal\n"
LATE_PATCH = "from time import sleep\nfrom gevent import monkey\nmonkey.patch_all()\n"


def _project(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.patchaudit]\n")
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tmp_path


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_findings_exit_1_and_concise_lines(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": LATE_PATCH})
    result = run_cli("check", cwd=project)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        "app.py:1:1: MPA201 `from time import sleep` binds the original `time.sleep` before "
        "patching; it blocks the whole process instead of yielding"
    )


def test_clean_project_exits_0(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": "from gevent import monkey\nmonkey.patch_all()\n"})
    result = run_cli("check", cwd=project)
    assert result.returncode == 0, result.stdout
    assert "All checks passed" in result.stdout


def test_fail_on_threshold(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": GEVENT_APP + "signal.signal(signal.SIGTERM, print)\n"})
    assert run_cli("check", cwd=project).returncode == 0  # only an info finding
    assert run_cli("check", "--fail-on", "info", cwd=project).returncode == 1
    late = _project(tmp_path, {"app.py": LATE_PATCH})
    assert run_cli("check", "--fail-on", "never", cwd=late).returncode == 0


def test_missing_path_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = run_cli("check", "does-not-exist", cwd=_project(tmp_path, {}))
    assert result.returncode == 2
    assert "does-not-exist" in _one_line_error(result)


def test_folder_without_python_files_exits_0_and_says_so(tmp_path: Path) -> None:
    project = _project(tmp_path, {"README.md": "hi"})
    result = run_cli("check", cwd=project)
    assert result.returncode == 0
    assert "no Python files found" in result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["check", "--select", "XYZ999"], "XYZ999"),
        (["check", "--format", "xml"], "xml"),
        (["check", "--jobs", "0"], "--jobs"),
        (["rules", "MPA999"], "MPA999"),
        ([], "missing command"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = run_cli(*args, cwd=_project(tmp_path, {"app.py": GEVENT_APP}))
    assert result.returncode == 2
    assert fragment in _one_line_error(result)


def test_broken_pyproject_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.patchaudit]\nselect = [\n")
    (tmp_path / "app.py").write_text(GEVENT_APP)
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "pyproject.toml" in _one_line_error(result)


def test_unknown_config_key_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.patchaudit]\nselectt = ['MPA1']\n")
    (tmp_path / "app.py").write_text(GEVENT_APP)
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'select'" in _one_line_error(result)


def _deep_expression(depth: int) -> str:
    return "import os\nx = " + "(" * depth + "1" + ")" * depth + "\n"


BAD_INPUTS: dict[str, bytes] = {
    "syntax.py": b"import os\nprint 'python 2'\n",
    "latin1.py": b"import gevent\nname = '\xe9t\xe9'\n",
    "nul.py": b"import gevent\x00\n",
    "nested.py": _deep_expression(5000).encode(),
    "big.py": b"import gevent\n" + b"".join(b"value_%d = %d\n" % (i, i) for i in range(700_000)),
}


def test_bad_files_are_reported_not_crashed_on_and_json_stays_valid(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {"app.py": LATE_PATCH, **BAD_INPUTS}
    project = _project(tmp_path, files)
    assert (project / "big.py").stat().st_size > 10_000_000
    result = run_cli("check", "--format", "json", cwd=project, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    parse_errors = {f["path"]: f["message"] for f in data["findings"] if f["rule"] == "MPA001"}
    assert set(parse_errors) == {"syntax.py", "latin1.py", "nul.py", "nested.py"}
    assert "UTF-8" in parse_errors["latin1.py"]
    assert "nested" in parse_errors["nested.py"]
    assert ("MPA201", "app.py", 1) in {(f["rule"], f["path"], f["line"]) for f in data["findings"]}
    assert data["errors"] == []


def test_symlink_loop_is_skipped_with_a_message(tmp_path: Path) -> None:
    project = _project(tmp_path, {"pkg/app.py": LATE_PATCH})
    os.symlink(project / "pkg", project / "pkg" / "loop")
    result = run_cli("check", "--format", "json", cwd=project)
    data = json.loads(result.stdout)
    assert result.returncode == 1
    assert any("loop" in e for e in data["errors"]), data["errors"]
    assert {(f["rule"], f["path"]) for f in data["findings"]} == {("MPA201", "pkg/app.py")}


DROP_READ_OVERRIDE = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def test_unreadable_file_is_reported_and_others_still_checked(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": LATE_PATCH, "secret.py": "import gevent\n"})
    os.chmod(project / "secret.py", 0o000)
    prefix: list[str] = []
    if os.geteuid() == 0:
        # root reads anything; drop the capabilities that let it, so the file really is unreadable
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        prefix = DROP_READ_OVERRIDE
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "patchaudit", "check", "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr
    assert data["errors"] == ["secret.py: cannot read (Permission denied)"]
    assert ("MPA201", "app.py") in {(f["rule"], f["path"]) for f in data["findings"]}


def _run_on_tty(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "patchaudit", *args],
        cwd=cwd,
        stdout=follower,
        stderr=follower,
        env={**os.environ, **env},
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_tty_gets_the_full_report_in_colour_and_no_color_turns_it_off(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": LATE_PATCH})
    env = {"TERM": "xterm-256color", "COLUMNS": "120"}
    coloured = _run_on_tty(["check"], project, {**env, "NO_COLOR": ""})
    assert "\x1b[" in coloured
    assert "MPA201" in coloured and "stale-module-binding" in coloured
    plain = _run_on_tty(["check"], project, {**env, "NO_COLOR": "1"})
    assert "\x1b[" not in plain
    assert "fix:" in plain and "from time import sleep" in plain
    flag = _run_on_tty(["check", "--no-color"], project, env)
    assert "\x1b[" not in flag


def test_output_file_and_formats(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": LATE_PATCH})
    out = project / "report.sarif"
    result = run_cli("check", "--format", "sarif", "--output", str(out), cwd=project)
    assert result.returncode == 1
    sarif = json.loads(out.read_text())
    assert sarif["version"] == "2.1.0"
    assert sarif["runs"][0]["results"][0]["ruleId"] == "MPA201"
    github = run_cli("check", "--format", "github", cwd=project).stdout
    assert github.startswith("::error title=patchaudit (MPA201),file=app.py,line=1,col=1")


def test_rules_command_lists_and_explains(tmp_path: Path) -> None:
    listing = run_cli("rules", cwd=tmp_path)
    assert listing.returncode == 0
    assert "MPA101  ssl-imported-before-patch" in listing.stdout
    one = run_cli("rules", "MPA201", cwd=tmp_path)
    assert one.stdout.startswith("# MPA201 stale-module-binding")
    by_name = run_cli("rules", "stale-module-binding", "--format", "json", cwd=tmp_path)
    assert json.loads(by_name.stdout)["code"] == "MPA201"


PATCH = "from gevent import monkey\nmonkey.patch_all()\n"


def test_noqa_and_file_level_suppression(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        {
            "a.py": "from time import sleep  # noqa: MPA201\n" + PATCH,
            "b.py": "# patchaudit: noqa: MPA201\nfrom time import sleep\n" + PATCH,
            "c.py": "from time import sleep  # noqa\n" + PATCH,
        },
    )
    result = run_cli("check", "--fail-on", "info", cwd=project)
    assert result.returncode == 0, result.stdout


def test_python_dash_m_and_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("patchaudit ")
