"""The real `pre-commit` tool runs our hook from a commit of the working tree, so the hook that is
tested is the code being changed, new files included.

`pre-commit run` with a config naming that commit, not `pre-commit try-repo`: try-repo installs
the hook's environment into a new temporary store on every call, `run` once per PRE_COMMIT_HOME.
"""

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
WSGI = """\
import helper
from gevent import monkey

monkey.patch_all()
"""
HELPER = """\
import time


def pause():
    time.sleep(1)
"""
STALE_HELPER = """\
from time import sleep


def pause():
    sleep(1)
"""

pytestmark = [
    pytest.mark.slow,  # the real pre-commit builds its hook environment
    pytest.mark.skipif(shutil.which("git") is None, reason="git is required"),
]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return done.stdout.decode(errors="surrogateescape")


def _new_repo(path: Path) -> Path:
    _git(path, "init", "-q")
    _git(path, "config", "user.email", "dev@example.invalid")
    _git(path, "config", "user.name", "Dev")
    return path


def _user_repo(path: Path, hook_repo: Path) -> Path:
    """A repository whose (staged) .pre-commit-config.yaml uses the hook at ``hook_repo``."""
    rev = _git(hook_repo, "rev-parse", "HEAD").strip()
    (path / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hook_repo}\n    rev: {rev}\n    hooks:\n      - id: patchaudit\n"
    )
    _git(_new_repo(path), "add", ".pre-commit-config.yaml")
    return path


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-commit copy of the working tree (tracked files as they are now, plus new files
    git does not ignore): try-repo on REPO itself would miss new, untracked modules."""
    clone = _new_repo(tmp_path_factory.mktemp("hook-repo"))
    listed = _git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = REPO / name
        if not os.path.lexists(source):  # deleted in the working tree
            continue
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, clone / name, follow_symlinks=False)
    _git(clone, "add", "-A")
    _git(clone, "commit", "-q", "-m", "working tree")
    return clone


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One PRE_COMMIT_HOME for the module: the hook's environment is installed once.
    return tmp_path_factory.mktemp("pre-commit-home")


def _pre_commit(
    home: Path, repo: Path, *, all_files: bool = True
) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "pre-commit"
    return subprocess.run(
        [str(executable), "run", "patchaudit", "--color", "never"]
        + (["--all-files"] if all_files else []),
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PRE_COMMIT_HOME": str(home)},
    )


def test_hook_fails_on_bad_file_and_passes_once_fixed(
    home: Path, hook_repo: Path, tmp_path: Path
) -> None:
    repo = _user_repo(tmp_path, hook_repo)
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


def test_staged_file_gets_the_finding_an_unchanged_file_causes(
    home: Path, hook_repo: Path, tmp_path: Path
) -> None:
    repo = _user_repo(tmp_path, hook_repo)
    (repo / "wsgi.py").write_text(WSGI)
    (repo / "helper.py").write_text(HELPER)
    _git(repo, "add", "wsgi.py", "helper.py")
    _git(repo, "commit", "-q", "-m", "app")

    (repo / "helper.py").write_text(STALE_HELPER)  # wsgi.py imports it before patching
    _git(repo, "add", "helper.py")
    staged = _pre_commit(home, repo, all_files=False)
    assert staged.returncode == 1, staged.stdout + staged.stderr
    assert "Failed" in staged.stdout
    assert "helper.py:1:1: MPA201 `from time import sleep` binds the original" in staged.stdout
    assert "wsgi.py:" not in staged.stdout  # only the staged file is reported
