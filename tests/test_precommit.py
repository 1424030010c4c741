"""The real `pre-commit` tool runs our hook from this repository (`pre-commit try-repo`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, require

require("pre_commit")

BAD = """\
import urllib.request
from gevent import monkey

monkey.patch_all()
"""
FIXED = """\
from gevent import monkey

monkey.patch_all()

import urllib.request  # noqa: E402
"""

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is required")


def _pre_commit(home: Path, repo: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "pre-commit"
    return subprocess.run(
        [str(executable), "try-repo", str(REPO), "patchaudit", "--all-files", "--color", "never"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PRE_COMMIT_HOME": str(home)},
    )


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60)


def test_hook_fails_on_bad_file_and_passes_once_fixed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("pre-commit-home")
    repo = tmp_path_factory.mktemp("user-repo")
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "dev@example.invalid")
    _git(repo, "config", "user.name", "Dev")
    (repo / "app.py").write_text(BAD)
    _git(repo, "add", "app.py")

    bad = _pre_commit(home, repo)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed" in bad.stdout
    assert "app.py:1:1: MPA101 importing `urllib.request` loads" in bad.stdout

    (repo / "app.py").write_text(FIXED)
    _git(repo, "add", "app.py")
    good = _pre_commit(home, repo)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Passed" in good.stdout
