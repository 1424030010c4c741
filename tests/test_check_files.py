"""`check FILE...` (what pre-commit runs) builds the model from the whole project root and reports
the findings in the named files only, including those an unchanged file causes in them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import _cache, check

from .conftest import run_cli, write_project

WSGI = "import helper\nfrom gevent import monkey\n\nmonkey.patch_all()\n"
HELPER = "from time import sleep\n"
LATE = "from time import sleep\nfrom gevent import monkey\nmonkey.patch_all()\n"


def _project(root: Path, files: dict[str, str]) -> Path:
    return write_project(root, files)


def _json_check(project: Path, *paths: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = run_cli("check", "--format", "json", *paths, cwd=project)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result, json.loads(result.stdout)


def _places(document: dict) -> list[tuple[str, str, int]]:
    return [(f["rule"], f["path"], f["line"]) for f in document["findings"]]


def test_a_named_file_gets_the_finding_an_unchanged_file_causes(tmp_path: Path) -> None:
    project = _project(tmp_path, {"wsgi.py": WSGI, "helper.py": HELPER})
    result, document = _json_check(project, "helper.py")
    assert result.returncode == 1
    assert _places(document) == [("MPA201", "helper.py", 1)]
    assert document["findings"][0]["evidence"]["patch_point"] == "wsgi.py:4"
    assert document["errors"] == []


def test_findings_in_files_not_named_are_not_reported(tmp_path: Path) -> None:
    project = _project(tmp_path, {"wsgi.py": WSGI, "helper.py": HELPER})
    result, document = _json_check(project, "wsgi.py")
    assert result.returncode == 0
    assert _places(document) == []
    result, document = _json_check(project, ".")
    assert result.returncode == 1
    assert _places(document) == [("MPA201", "helper.py", 1)]


def test_a_named_folder_is_reported_with_the_model_of_the_root(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        {
            "wsgi.py": WSGI.replace("import helper", "import pkg.helper"),
            "pkg/__init__.py": "",
            "pkg/helper.py": HELPER,
            "other/late.py": LATE,
        },
    )
    _, document = _json_check(project, "pkg")
    assert _places(document) == [("MPA201", "pkg/helper.py", 1)]
    _, document = _json_check(project, "pkg", "other/late.py")  # a mixed list
    assert _places(document) == [("MPA201", "other/late.py", 1), ("MPA201", "pkg/helper.py", 1)]


def test_named_files_the_root_walk_skips_are_checked_and_modelled(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        {
            ".gitignore": "generated.py\n",
            "generated.py": HELPER,
            "wsgi.py": WSGI.replace("import helper", "import generated"),
            # an extensionless script (pre-commit passes those): only in the model when named
            "serve": "import helper\nfrom gevent import monkey\nmonkey.patch_all()\n",
            "helper.py": HELPER,
        },
    )
    _, document = _json_check(project, "generated.py")
    assert _places(document) == [("MPA201", "generated.py", 1)]
    _, document = _json_check(project, ".")  # the walk leaves the ignored file out
    assert _places(document) == []
    _, document = _json_check(project, "serve", "helper.py")
    assert _places(document) == [("MPA201", "helper.py", 1)]
    assert document["findings"][0]["evidence"]["patch_point"] == "serve:3"


def test_named_paths_keep_their_checks(tmp_path: Path) -> None:
    project = _project(tmp_path / "project", {"wsgi.py": WSGI, "helper.py": HELPER})
    (tmp_path / "outside.py").write_text(HELPER)
    result, document = _json_check(project, "helper.py", "../outside.py")
    assert document["errors"] == [f"skipped ../outside.py: outside the project root {project}"]
    assert _places(document) == [("MPA201", "helper.py", 1)]
    missing = run_cli("check", "helper.py", "nope.py", cwd=project)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "patchaudit: error: path does not exist: nope.py"
    ]


def test_counts_describe_the_named_files_and_a_note_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path, {"wsgi.py": WSGI, "helper.py": HELPER, "util.py": "import os\n"})
    monkeypatch.chdir(project)
    config = load_config([Path("helper.py")], REGISTRY.keys())
    report = check([Path("helper.py")], config, cwd=project, use_cache=False)
    assert (report.files_seen, report.files_analyzed, report.files_failed) == (1, 1, 0)
    assert (
        "1 file checked against the whole project: the model spans 3 files under .; "
        "findings in other files are not shown"
    ) in report.notes
    whole = check([Path(".")], config, cwd=project, use_cache=False)
    assert (whole.files_seen, whole.files_analyzed) == (3, 3)
    assert not [n for n in whole.notes if "whole project" in n]


def test_a_file_check_reuses_and_keeps_the_whole_root_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("PATCHAUDIT_CACHE_DIR", str(cache_dir))
    # Files changed in the last 2 s are hashed again on the next run (their stat can't be
    # trusted yet); these were written just now, so let the engine trust them at once.
    monkeypatch.setattr(_cache, "RACY_NS", 0)
    project = _project(tmp_path / "project", {"wsgi.py": WSGI, "helper.py": HELPER})
    monkeypatch.chdir(project)
    config = load_config([Path("helper.py")], REGISTRY.keys())
    folder = _cache.Folder(cache_dir, in_tree=False)
    name = _cache.files_name(config.fingerprint())

    first = check([Path(".")], config, cwd=project)
    assert [(f.rule, f.path) for f in first.findings] == [("MPA201", "helper.py")]
    stored = os.stat(folder.file(name))
    assert set(_cache.load_files(folder, name)) == {"helper.py", "wsgi.py"}
    stage = folder.file("stage-" + name.removeprefix("files-").removesuffix(".jsonl") + ".json")
    staged = os.stat(stage)

    for _ in range(2):
        again = check([Path("helper.py")], config, cwd=project)
        assert [(f.rule, f.path, f.line) for f in again.findings] == [("MPA201", "helper.py", 1)]
        now = os.stat(folder.file(name))  # nothing changed: the cache file was not rewritten
        assert (now.st_ino, now.st_mtime_ns) == (stored.st_ino, stored.st_mtime_ns)
        now = os.stat(stage)  # nor the whole root's stage output, replayed for the named file
        assert (now.st_ino, now.st_mtime_ns) == (staged.st_ino, staged.st_mtime_ns)
    # the entries of the files not named are still there for the next `check .`
    entries = _cache.load_files(folder, name)
    assert set(entries) == {"helper.py", "wsgi.py"}
    for row in entries.values():
        summary = _cache.decode_summary(row.text)
        assert summary is not None
        assert _cache.encode_summary(summary) == (row.text, row.entry.summary_digest)


def _many_files(root: Path) -> Path:
    files = {f"pkg/mod{i}.py": "import gevent\n" for i in range(60)}
    return write_project(root, {"pkg/__init__.py": "", **files})


def test_a_terminal_sees_a_progress_line_that_is_erased_before_the_report(tmp_path: Path) -> None:
    from ._terminal import run_on_a_terminal

    project = _many_files(tmp_path / "p")
    code, output = run_on_a_terminal(
        [sys.executable, "-m", "patchaudit", "check", "-j", "1", "."],
        cwd=project,
        env={"PATCHAUDIT_PROGRESS_DELAY": "0"},
    )
    assert code == 0
    assert "patchaudit check: parsed 60/60 files" in output
    assert "\r\x1b[K" in output.split("parsed 60/60 files", 1)[1]  # erased, then the report


def test_a_pipe_gets_no_progress_line(tmp_path: Path) -> None:
    project = _many_files(tmp_path / "p")
    result = run_cli("check", "-j", "1", ".", cwd=project, env={"PATCHAUDIT_PROGRESS_DELAY": "0"})
    assert "parsed" not in result.stderr and "\x1b" not in result.stderr
