"""patchaudit as a user installs it: a wheel built from the tracked sources, installed (not
editable) into a fresh venv, whose `patchaudit demo` serves the apps shipped inside it.

No download: the wheel is built without isolation and installed without dependencies; the new
venv sees this venv's libraries through a ``.pth`` line (a plain path, so this venv's editable
patchaudit finder is not loaded with them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.timeout(300)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=240, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the venv it is installed in)."""
    root = tmp_path_factory.mktemp("install")
    tracked = _run(["git", "ls-files", "-z", "patchaudit", "pyproject.toml", "README.md"], REPO)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    source = root / "src"  # what a clean clone has: tracked files only
    for name in filter(None, tracked.stdout.split("\0")):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    pip = [sys.executable, "-m", "pip"]
    wheel_options = ["--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist")]
    built = _run([*pip, "wheel", *wheel_options, str(source)], root)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("patchaudit-*.whl")
    target = root / "venv"
    venv.create(target, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(target)}))
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = target / "bin" / "python"
    install = ["--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    done = _run([*pip, *install], root)
    assert done.returncode == 0, done.stderr
    return wheel, target


def test_the_wheel_carries_the_demo_apps_and_the_probe_files(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    apps = REPO / "patchaudit" / "harness" / "demo_apps"
    for app in apps.glob("*/*/app.py"):
        assert app.relative_to(REPO).as_posix() in names
    assert "patchaudit/probe/_site/sitecustomize.py" in names


def test_demo_runs_from_the_installed_package(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, target = installed
    patchaudit = target / "bin" / "patchaudit"
    code = "import patchaudit; print(patchaudit.__file__)"
    where = _run([str(target / "bin" / "python"), "-c", code], tmp_path)
    assert where.stdout.startswith(str(target)), where.stdout  # not this checkout
    helped = _run([str(patchaudit), "demo", "--help"], tmp_path)
    assert helped.returncode == 0 and "--shapes" in helped.stdout, helped.stderr
    # away from any checkout: only the installed apps can be found
    argv = [str(patchaudit), "demo", "--shapes", "stale-sleep", "-n", "12", "-c", "4"]
    result = _run([*argv, "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    runs = {run["variant"]: run for run in json.loads(result.stdout)["runs"]}
    assert runs["bad"]["problem"] is None and runs["fixed"]["problem"] is None
    assert runs["bad"]["completed"] == runs["fixed"]["completed"] == 12
    # the same explanation as from a checkout: the app's own frames are found in the copy
    assert "MPA251" in runs["bad"]["findings"]
    assert runs["fixed"]["findings"] == []
