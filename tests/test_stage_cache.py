"""The project stage's stored output (``stage-<key>.json``, see ``patchaudit/static/_stage.py``).

A warm run whose summaries are all unchanged replays the stored output instead of running the
project stage; a changed summary, an installed module the import replay read, or a folder it
listed makes it run again; a damaged or crafted stage file is ignored. Every warm run is
compared with a run without the cache, and every test asserts the exact (code, path, line) of
the findings.

The stage stores nothing when a file or folder it read changed in the last 2 s (see
``_cache.RACY_NS``): the tests date the folders they create 10 s back, and sleep where a file
the replay reads was just written (``os.utime`` cannot set ctime back).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from patchaudit._config import load_config
from patchaudit._findings import Report
from patchaudit.rules import REGISTRY
from patchaudit.static import _cache, _evaluate, check
from patchaudit.static._stage import StageEntry

from .conftest import run_cli, write_project

PATCH = "from gevent import monkey\nmonkey.patch_all()\n"
SSL_FIRST = "import ssl\n" + PATCH  # MPA101 on line 1
ABC_FIRST = "import abc\n" + PATCH  # same size, clean
STALE_SLEEP = "from time import sleep\n" + PATCH  # MPA201 on line 1
FILES = {
    "app.py": SSL_FIRST,
    "worker.py": STALE_SLEEP,
    # a used and an unused noqa: MPA002 on line 2
    "quiet.py": "import ssl  # noqa: MPA101\nimport os  # noqa: MPA201\n" + PATCH,
    # a second `worker` module: the stage notes it
    "src/worker.py": "import gevent\n",
}
EXPECTED = [("MPA101", "app.py", 1), ("MPA002", "quiet.py", 2), ("MPA201", "worker.py", 1)]
DUPLICATE_NOTE = (
    "1 module name(s) are defined by more than one file (worker); those files are analysed as "
    "separate scripts"
)
FIELDS = [f.name for f in dataclasses.fields(StageEntry)]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own cache folder (not the session's), for in-process and CLI runs alike."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PATCHAUDIT_CACHE_DIR", str(folder))
    return folder


def _settle(*folders: Path) -> None:
    """Date every folder under ``folders`` 10 s back, as if created a while ago."""
    past = time.time() - 10
    for folder in folders:
        for dirpath, _dirs, _files in os.walk(folder):
            os.utime(dirpath, (past, past))


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> Path:
    project = write_project(tmp_path / "project", files)
    _settle(project)
    monkeypatch.chdir(project)
    return project


def _run(project: Path, *, use_cache: bool = True) -> Report:
    config = load_config([Path(".")], REGISTRY.keys())
    return check([Path(".")], config, cwd=project, use_cache=use_cache, jobs=1)


def _places(report: Report) -> list[tuple[str, str, int]]:
    return [(f.rule, f.path, f.line) for f in report.findings]


def _outcome(report: Report) -> dict[str, Any]:
    """Everything a run reports, findings with their evidence and end positions."""
    return {
        "findings": [(f.to_json(), f.end_line, f.end_column, f.test) for f in report.findings],
        "errors": report.errors,
        "notes": report.notes,
        "warnings": report.warnings,
        "programs": report.programs,
        "counts": (report.files_seen, report.files_analyzed, report.files_failed),
    }


def _same_as_clean(project: Path, report: Report) -> None:
    assert _outcome(report) == _outcome(_run(project, use_cache=False))


def _stage_file(cache: Path) -> Path:
    (path,) = cache.glob("stage-*.json")
    return path


def _identity(path: Path) -> tuple[int, int, bytes]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def _stage_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the project stage ran")


def _replayed(project: Path, monkeypatch: pytest.MonkeyPatch) -> Report:
    """A cached run that must replay the stored output: running the stage fails it."""
    with monkeypatch.context() as patched:
        patched.setattr(_evaluate, "evaluate", _stage_not_run)
        return _run(project)


def _first(project: Path, cache: Path) -> tuple[Report, Path, tuple[int, int, bytes]]:
    first = _run(project)
    assert _places(first) == EXPECTED
    assert first.notes == [DUPLICATE_NOTE]
    stage = _stage_file(cache)
    return first, stage, _identity(stage)


# -- reused when no summary changed ---------------------------------------------------------


def test_a_comment_and_a_touch_reuse_the_stored_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    project = _project(tmp_path, monkeypatch, FILES)
    first, stage, stored = _first(project, cache)
    with open(project / "worker.py", "a") as handle:
        handle.write("# a comment: no summary changes\n")
    os.utime(project / "app.py")  # touched: read and hashed again, same content
    second = _replayed(project, monkeypatch)
    assert _identity(stage) == stored  # not rewritten
    assert _places(second) == EXPECTED
    assert second.notes == [DUPLICATE_NOTE]
    assert [p["entry"] for p in second.programs] == [p["entry"] for p in first.programs]
    assert sorted(p["entry"] for p in second.programs) == [
        "app.py",
        "quiet.py",
        "src/worker.py",
        "worker.py",
    ]
    assert _outcome(second) == _outcome(first)
    _same_as_clean(project, second)
    third = _replayed(project, monkeypatch)  # and again, now that nothing was even read
    assert _identity(stage) == stored
    assert _outcome(third) == _outcome(second)


def test_the_cli_reuses_the_stored_output(tmp_path: Path, cache: Path) -> None:
    project = write_project(tmp_path / "project", FILES)
    _settle(project)
    first = run_cli("check", "--format", "json", cwd=project)
    assert first.returncode == 1, first.stderr
    assert _json_places(first) == EXPECTED
    stage = _stage_file(cache)
    stored = _identity(stage)
    with open(project / "app.py", "a") as handle:
        handle.write('"""A docstring after the patch: no summary changes."""\n')
    second = run_cli("check", "--format", "json", cwd=project)
    assert _identity(stage) == stored
    clean = run_cli("check", "--format", "json", "--no-cache", cwd=project)
    assert (second.returncode, second.stdout, second.stderr) == (
        clean.returncode,
        clean.stdout,
        clean.stderr,
    )
    assert json.loads(second.stdout)["programs"] == json.loads(first.stdout)["programs"]
    full = run_cli("check", "--format", "full", "--no-color", cwd=project)
    full_clean = run_cli("check", "--format", "full", "--no-color", "--no-cache", cwd=project)
    assert _identity(stage) == stored
    assert (full.returncode, full.stdout) == (full_clean.returncode, full_clean.stdout)
    assert " 1 | import ssl" in full.stdout


def _json_places(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str, int]]:
    return [(f["rule"], f["path"], f["line"]) for f in json.loads(result.stdout)["findings"]]


# -- run again when a summary changes -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (  # an import changes: MPA101 goes
            "app.py",
            ABC_FIRST,
            [("MPA002", "quiet.py", 2), ("MPA201", "worker.py", 1)],
        ),
        (  # a line added above: the finding moves
            "worker.py",
            "import os\n" + STALE_SLEEP,
            [("MPA101", "app.py", 1), ("MPA002", "quiet.py", 2), ("MPA201", "worker.py", 2)],
        ),
        (  # a comment that matters (noqa) is part of the summary: the unused one goes
            "quiet.py",
            "import ssl  # noqa: MPA101\nimport os\n" + PATCH,
            [("MPA101", "app.py", 1), ("MPA201", "worker.py", 1)],
        ),
        (  # the same module patches first now: nothing before it
            "app.py",
            PATCH + "import ssl\n",
            [("MPA002", "quiet.py", 2), ("MPA201", "worker.py", 1)],
        ),
    ],
)
def test_a_changed_summary_runs_the_stage_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cache: Path,
    name: str,
    text: str,
    expected: list[tuple[str, str, int]],
) -> None:
    project = _project(tmp_path, monkeypatch, FILES)
    first, stage, stored = _first(project, cache)
    (project / name).write_text(text)  # in place: the folder's mtime stays
    second = _run(project)
    assert _places(second) == expected
    _same_as_clean(project, second)
    rewritten = _identity(stage)
    assert rewritten[0] != stored[0] and rewritten[2] != stored[2]  # a new output, stored
    third = _replayed(project, monkeypatch)  # which the next run replays
    assert _identity(stage) == rewritten
    assert _outcome(third) == _outcome(second)
    (project / name).write_text(FILES[name])  # back: the first output again
    back = _run(project)
    assert _outcome(back) == _outcome(first)


# -- a damaged or crafted stage file is ignored ----------------------------------------------


class _OpensMarker:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _with(document: dict[str, Any], **fields: Any) -> str:
    entries = list(document["entries"])
    for name, value in fields.items():
        entries[FIELDS.index(name)] = value
    return json.dumps({**document, "entries": entries})


def _bumped(pairs: list[list[Any]]) -> list[list[Any]]:
    """The first (path, stat or mtime) pair with a different stat or mtime."""
    (path, key), *rest = pairs
    return [[path, [key[0] + 1, *key[1:]] if isinstance(key, list) else key + 1], *rest]


@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "truncated",
        "pickle",
        "not-a-document",
        "wrong-format",
        "wrong-kind",
        "wrong-type",
        "smuggled-object",
        "deep-nesting",
        "wrong-inputs",
        "other-inputs",
        "installed-file-changed",
        "folder-changed",
        "file-gone",
    ],
)
def test_a_damaged_or_crafted_stage_file_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path, damage: str
) -> None:
    project = _project(tmp_path, monkeypatch, FILES)
    _first(project, cache)
    stage = _stage_file(cache)
    good = stage.read_text()
    document = json.loads(good)
    assert document["format"] == _cache.FORMAT and document["kind"] == "stage"
    assert [len(v) > 0 for v in document["entries"][FIELDS.index("files_read") :]] == [True, True]
    marker = tmp_path / "pwned"
    if damage == "other-inputs":
        # a valid output of another state of the tree: here it would bring MPA101 back
        (project / "app.py").write_text(ABC_FIRST)
        assert _places(_run(project)) == [("MPA002", "quiet.py", 2), ("MPA201", "worker.py", 1)]
        expected = [("MPA002", "quiet.py", 2), ("MPA201", "worker.py", 1)]
        text = good
    elif damage == "pickle":
        expected, text = EXPECTED, ""
    else:
        expected = EXPECTED
        read = document["entries"][FIELDS.index("files_read")]
        listed = document["entries"][FIELDS.index("folders_listed")]
        text = {
            "garbage": lambda: "\x00not json at all{",
            "truncated": lambda: good[: len(good) // 2],
            "not-a-document": lambda: json.dumps(document["entries"]),
            "wrong-format": lambda: json.dumps({**document, "format": 999}),
            "wrong-kind": lambda: json.dumps({**document, "kind": "modules"}),
            "wrong-type": lambda: json.dumps(
                {**document, "entries": [str(v) for v in document["entries"]]}
            ),
            "smuggled-object": lambda: _with(
                document, findings=[{"__class__": "os.system", "args": [f"touch {marker}"]}]
            ),
            "deep-nesting": lambda: json.dumps({**document, "entries": "@"}).replace(
                '"@"', "[" * 100_000 + "]" * 100_000
            ),
            # no findings: believed, this would hide every finding
            "wrong-inputs": lambda: _with(document, inputs="0" * 32, findings=[]),
            # the right inputs, no findings, and what it read not as it is now
            "installed-file-changed": lambda: _with(
                document, findings=[], files_read=_bumped(read)
            ),
            "folder-changed": lambda: _with(document, findings=[], folders_listed=_bumped(listed)),
            "file-gone": lambda: _with(
                document, findings=[], files_read=[[str(tmp_path / "gone.py"), read[0][1]], *read]
            ),
        }[damage]()
    stage.write_bytes(pickle.dumps(_OpensMarker(marker)) if damage == "pickle" else text.encode())
    report = _run(project)
    assert not marker.exists()
    assert _places(report) == expected
    assert report.errors == [] and report.warnings == []
    _same_as_clean(project, report)
    # stored again, valid: the next run replays it
    again = _replayed(project, monkeypatch)
    assert _outcome(again) == _outcome(report)


def test_the_stored_output_is_what_a_warm_run_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    """The control for the crafted files above: a stage file for exactly these inputs, whose
    installed files and folders are as it lists them, is believed (it is this user's own cache,
    under a name keyed with their secret); the test above is ignored for what it changes."""
    project = _project(tmp_path, monkeypatch, FILES)
    _first(project, cache)
    stage = _stage_file(cache)
    document = json.loads(stage.read_text())
    findings = document["entries"][FIELDS.index("findings")]
    kept = [f for f in findings if f[0] != "MPA101"]
    assert len(kept) == len(findings) - 1
    stage.write_text(_with(document, findings=kept, notes=["a stored note"]))
    report = _replayed(project, monkeypatch)
    assert _places(report) == [("MPA002", "quiet.py", 2), ("MPA201", "worker.py", 1)]
    assert report.notes == ["a stored note"]


# -- the installed environment it read ------------------------------------------------------


def _installed(tmp_path: Path, helper: str | None) -> tuple[Path, Path, dict[str, str]]:
    """A project importing ``helper_lib`` from a folder on PYTHONPATH (not installed: None)."""
    site = tmp_path / "site"
    site.mkdir()
    if helper is not None:
        (site / "helper_lib.py").write_text(helper)
    project = write_project(
        tmp_path / "project", {"app.py": "import helper_lib\n" + PATCH, "worker.py": STALE_SLEEP}
    )
    env = {"PYTHONPATH": str(site), "PATCHAUDIT_CACHE_DIR": str(tmp_path / "cache")}
    return site, project, env


def _cli(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("check", "--format", "json", *args, cwd=project, env=env)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert result.stderr == ""
    return result


def _same_as_clean_cli(
    project: Path, env: dict[str, str], result: subprocess.CompletedProcess[str]
) -> None:
    clean = _cli(project, env, "--no-cache")
    assert (result.returncode, result.stdout) == (clean.returncode, clean.stdout)


def _stage_lists(cache: Path) -> tuple[list[str], list[str]]:
    entries = json.loads(_stage_file(cache).read_text())["entries"]
    read = [path for path, _ in entries[FIELDS.index("files_read")]]
    return read, [path for path, _ in entries[FIELDS.index("folders_listed")]]


MPA101_HELPER = ("MPA101", "app.py", 1)
MPA201_WORKER = ("MPA201", "worker.py", 1)


@pytest.mark.slow  # waits for timestamps to age past the racy window
def test_a_changed_installed_module_runs_the_stage_again(tmp_path: Path) -> None:
    site, project, env = _installed(tmp_path, "import os\n")
    cache = tmp_path / "cache"
    time.sleep(2.1)  # helper_lib.py's ctime must be over 2 s old for the output to be stored
    _settle(site, project)
    first = _cli(project, env)
    assert _json_places(first) == [MPA201_WORKER]
    read, listed = _stage_lists(cache)
    assert str(site / "helper_lib.py") in read
    assert str(site) in listed and str(project) in listed
    stored = _identity(_stage_file(cache))
    warm = _cli(project, env)  # nothing changed: replayed
    assert _identity(_stage_file(cache)) == stored
    assert warm.stdout == first.stdout
    # The installed module now imports ssl: importing it before the patch is MPA101.
    (site / "helper_lib.py").write_text("import ssl\n")
    second = _cli(project, env)
    assert _json_places(second) == [MPA101_HELPER, MPA201_WORKER]
    message = json.loads(second.stdout)["findings"][0]["message"]
    assert message.startswith("importing `helper_lib` loads ")
    _same_as_clean_cli(project, env, second)
    # helper_lib.py changed just now: nothing stored, and the stale output is still refused
    assert _identity(_stage_file(cache)) == stored
    third = _cli(project, env)
    assert third.stdout == second.stdout
    # Once it is old enough, the new output is stored and replayed.
    time.sleep(2.1)
    fourth = _cli(project, env)
    assert fourth.stdout == second.stdout
    rewritten = _identity(_stage_file(cache))
    assert rewritten != stored
    assert _cli(project, env).stdout == second.stdout
    assert _identity(_stage_file(cache)) == rewritten
    # And back to a clean module, patched by helper_lib itself before anything else.
    (site / "helper_lib.py").write_text(PATCH)
    fifth = _cli(project, env)
    assert _json_places(fifth) == [MPA201_WORKER]
    _same_as_clean_cli(project, env, fifth)


def test_a_module_installed_since_runs_the_stage_again(tmp_path: Path) -> None:
    site, project, env = _installed(tmp_path, None)
    cache = tmp_path / "cache"
    _settle(site, project)
    first = _cli(project, env)
    assert _json_places(first) == [MPA201_WORKER]  # helper_lib is not installed
    read, listed = _stage_lists(cache)
    assert str(site / "helper_lib.py") not in read and str(site) in listed
    stored = _identity(_stage_file(cache))
    assert _cli(project, env).stdout == first.stdout
    assert _identity(_stage_file(cache)) == stored
    (site / "helper_lib.py").write_text("import ssl\n")  # the folder it listed changes
    second = _cli(project, env)
    assert _json_places(second) == [MPA101_HELPER, MPA201_WORKER]
    _same_as_clean_cli(project, env, second)


def test_another_search_path_is_another_stage(tmp_path: Path) -> None:
    site, project, env = _installed(tmp_path, "import os\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "helper_lib.py").write_text("import ssl\n")
    time.sleep(2.1)
    _settle(site, other, project)
    assert _json_places(_cli(project, env)) == [MPA201_WORKER]
    elsewhere = {**env, "PYTHONPATH": str(other)}
    second = _cli(project, elsewhere)
    assert _json_places(second) == [MPA101_HELPER, MPA201_WORKER]
    _same_as_clean_cli(project, elsewhere, second)
    assert _json_places(_cli(project, env)) == [MPA201_WORKER]


# -- what the stage reads from the tree besides the summaries -------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pyproject.toml", '[project]\nname = "mylib"\n\n[tool.patchaudit]\n'),
        ("setup.py", 'from setuptools import setup\nsetup(name="mylib")\n'),
        ("setup.cfg", "[metadata]\nname = mylib\n"),
    ],
)
def test_edited_packaging_metadata_runs_the_stage_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path, name: str, text: str
) -> None:
    """What ``pip install .`` ships is read from the packaging metadata, not from summaries: an
    edit to it (in place, so no folder changes) must not replay the output stored before."""
    # An example importing a module before patching: the module's MPA201, unless the project
    # ships that module (then the example's mistake is not the library's).
    files = {
        "mylib.py": "from time import sleep\n",
        "example.py": "import mylib\n" + PATCH,
        "setup.py": 'from setuptools import setup\nsetup(name="other")\n',
        "setup.cfg": "[metadata]\nname = other\n",
    }
    project = _project(tmp_path, monkeypatch, files)
    assert _places(_run(project)) == [("MPA201", "mylib.py", 1)]
    assert _stage_file(cache).exists()
    stored = _identity(_stage_file(cache))
    (project / name).write_text(text)  # in place: no summary changes
    second = _run(project)
    assert _places(second) == []
    _same_as_clean(project, second)
    assert _identity(_stage_file(cache)) != stored
