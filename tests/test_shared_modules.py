"""Installed modules are summarized once for every project of the user (``_cache.shared_folder``).

The import replay reads the source of every installed module a program's start imports; those
summaries are kept per search-path entry in the user's shared cache folder, so a second project
importing the same packages does not parse them again. Real runs, in process, with a module
installed on the search path for the test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import _modules, check

from .conftest import write_project

APP = "import helper_lib\nfrom gevent import monkey\nmonkey.patch_all()\n"
HELPER = "import ssl\n"  # importing it loads ssl before the patch: MPA101 on app.py line 1


def _check(project: Path, use_cache: bool = True) -> list[tuple[str, str, int]]:
    config = load_config([project], REGISTRY.keys(), config_file=None)
    report = check([project], config, cwd=project, use_cache=use_cache, jobs=1)
    return [(f.rule, f.path, f.line) for f in report.findings]


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``site/helper_lib.py`` per test, written once and then left alone for 2 s: only files
    older than the racy window are stored (their ctime cannot be set back)."""
    root = tmp_path_factory.mktemp("sites")
    for name in ("reuse", "changed", "nocache"):
        (root / name).mkdir()
        (root / name / "helper_lib.py").write_text(HELPER)
    time.sleep(2.1)
    return root


@pytest.fixture
def installed(
    sites: Path, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[str]]:
    """This test's folder on sys.path holding ``helper_lib``, its own cache folder, and the list
    of installed files the replay summarizes (read from their source)."""
    site = sites / request.param
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PATCHAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    read: list[str] = []
    original = _modules.summarize_external

    def counting(name: str, kind: str, path: str, is_package: bool) -> _modules.ModuleNode:
        read.append(path)
        return original(name, kind, path, is_package)

    monkeypatch.setattr(_modules, "summarize_external", counting)
    return site, read


@pytest.mark.parametrize("installed", ["reuse"], indirect=True)
def test_a_second_project_reuses_the_first_ones_installed_summaries(
    tmp_path: Path, installed: tuple[Path, list[str]]
) -> None:
    site, read = installed
    first = write_project(tmp_path / "one", {"app.py": APP})
    second = write_project(tmp_path / "two", {"app.py": APP})
    assert _check(first) == [("MPA101", "app.py", 1)]
    helper = str(site / "helper_lib.py")
    assert helper in read  # summarized from its source once...
    shards = sorted((tmp_path / "cache").glob("installed-*.json"))
    assert shards, "no shared summaries written"
    read.clear()
    assert _check(second) == [("MPA101", "app.py", 1)]
    assert read == []  # ... and not again for the other project, nor anything else installed


@pytest.mark.parametrize("installed", ["changed"], indirect=True)
def test_a_changed_installed_module_is_read_again(
    tmp_path: Path, installed: tuple[Path, list[str]]
) -> None:
    site, read = installed
    first = write_project(tmp_path / "one", {"app.py": APP})
    second = write_project(tmp_path / "two", {"app.py": APP})
    assert _check(first) == [("MPA101", "app.py", 1)]
    (site / "helper_lib.py").write_text("import abc\n\n\n")  # now harmless (a new size)
    read.clear()
    assert _check(second) == []
    assert read == [str(site / "helper_lib.py")]


@pytest.mark.parametrize("installed", ["nocache"], indirect=True)
def test_no_cache_writes_no_shared_summaries(
    tmp_path: Path, installed: tuple[Path, list[str]]
) -> None:
    project = write_project(tmp_path / "one", {"app.py": APP})
    assert _check(project, use_cache=False) == [("MPA101", "app.py", 1)]
    assert not (tmp_path / "cache").exists()
