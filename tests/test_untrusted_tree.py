"""`patchaudit check` on a hostile tree, end to end in subprocesses.

The checked tree may come from an untrusted pull request: nothing in it is executed or
unpickled, no link out of it is followed, the cache in it cannot be used to run code, redirect
writes or hang the run, and bad input costs a line of output, not the run. Most tests keep the
cache in the tree (``.patchaudit_cache``), so the session's ``PATCHAUDIT_CACHE_DIR`` is unset
for them.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from patchaudit.static import _cache
from patchaudit.static._cache import (
    FORMAT,
    FileEntry,
    content_hash,
    decode_summary,
    encode_summary,
)
from patchaudit.static._plain import ShapeError, decoder, encoder
from patchaudit.static._summary import summarize
from patchaudit.static._workers import WORKER_DIED

from .conftest import FIXTURES

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links, FIFOs and /proc")

SSL_FIRST = "import ssl\nfrom gevent import monkey\nmonkey.patch_all()\n"  # MPA101 on line 1
ABC_FIRST = "import abc\nfrom gevent import monkey\nmonkey.patch_all()\n"  # same size, clean
STALE_SLEEP = "from time import sleep\nfrom gevent import monkey\nmonkey.patch_all()\n"  # MPA201
SECRET = "SECRET_OUTSIDE_TOKEN"
OUTSIDE_SOURCE = (
    f"from time import sleep  # {SECRET}\nfrom gevent import monkey\nmonkey.patch_all()\n"
)


def _project(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.patchaudit]\n")
    for name, text in (files or {"app.py": SSL_FIRST, "worker.py": STALE_SLEEP}).items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project


def _settle(project: Path) -> None:
    """Create the in-tree cache folder and date the project folder 10 s back: the project
    stage's output is stored only when every folder it listed (the root, where imports are
    looked up) changed more than 2 s before the run (see ``_cache.RACY_NS``), so the first run
    then writes all four cache kinds."""
    (project / ".patchaudit_cache").mkdir()
    past = time.time() - 10
    os.utime(project, (past, past))


def _cache_files(project: Path) -> list[Path]:
    """The cache's data files: JSON documents and the files cache (``.jsonl``) in the tree,
    and the summaries of installed modules in the user's shared folder (see ``_check``)."""
    cache, shared = project / ".patchaudit_cache", _home(project) / "patchaudit" / "installed"
    found = [*cache.glob("*.json"), *cache.glob("*.jsonl"), *shared.glob("installed-*.json")]
    return sorted(found, key=lambda p: p.name)


def _kinds(paths: list[Path]) -> list[str]:
    return sorted({p.name.split("-")[0] for p in paths})


KINDS = ["files", "gevent", "installed", "stage"]


def _home(project: Path) -> Path:
    """This test's own ``XDG_CACHE_HOME``: the user's shared cache folder is not the real one."""
    return project.parent / "home"


def _jsonl_lines(path: Path) -> tuple[object, list[tuple[list, str]]]:
    """The files cache's header and its rows as ([relpath, FileEntry plain form], summary)."""
    header, *rows = path.read_text().split("\n")[:-1]
    split = [row.partition("\t") for row in rows]
    assert all(tab == "\t" for _, tab, _ in split)
    return json.loads(header), [(json.loads(head), text) for head, _, text in split]


def _jsonl(header: object, rows: list[tuple[object, str]]) -> str:
    lines = [json.dumps(header)] + [f"{json.dumps(head)}\t{text}" for head, text in rows]
    return "".join(line + "\n" for line in lines)


def _check(
    project: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`patchaudit check` with the cache in the tree (no PATCHAUDIT_CACHE_DIR)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHAUDIT_")}
    full_env["XDG_CACHE_HOME"] = str(_home(project))
    return subprocess.run(
        [sys.executable, "-m", "patchaudit", "check", "--format", "concise", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**full_env, **(env or {})},
    )


def _same_as_clean(project: Path, result: subprocess.CompletedProcess[str]) -> None:
    clean = _check(project, "--no-cache")
    assert (result.returncode, result.stdout, result.stderr) == (
        clean.returncode,
        clean.stdout,
        clean.stderr,
    )


def _findings(result: subprocess.CompletedProcess[str] | dict) -> set[tuple[str, str, int]]:
    data = result if isinstance(result, dict) else json.loads(result.stdout)
    return {(f["rule"], f["path"], f["line"]) for f in data["findings"]}


EXPECTED = {("MPA101", "app.py", 1), ("MPA201", "worker.py", 1)}


# -- the cache is plain data ----------------------------------------------------------------


class _OpensMarker:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_cache_files_are_never_loaded(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _settle(project)
    first = _check(project)
    paths = _cache_files(project)
    assert _kinds(paths) == KINDS
    assert [p.suffix for p in paths if p.name.startswith("files-")] == [".jsonl"]
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_OpensMarker(proof))).close()
    assert proof.exists()  # the payload works: loading it is running code
    marker = tmp_path / "pwned"
    crafted = pickle.dumps(_OpensMarker(marker))
    for path in paths:  # the new names with a pickle inside, and the old .pickle names
        path.write_bytes(crafted)
        path.with_suffix(".pickle").write_bytes(crafted)
    second = _check(project)
    assert not marker.exists()
    assert (second.returncode, second.stdout, second.stderr) == (1, first.stdout, "")
    _same_as_clean(project, second)
    for path in paths:  # rebuilt as JSON
        name = path.name
        if name.endswith(".jsonl"):
            header, rows = _jsonl_lines(path)
            assert header == {"format": FORMAT, "kind": "files"}
            assert sorted(head[0] for head, _ in rows) == ["app.py", "worker.py"]
        else:
            document = json.loads(path.read_text())
            kind = {"installed": "modules"}.get(name.split("-")[0], name.split("-")[0])
            if not name.startswith("gevent-"):
                assert (document["format"], document["kind"]) == (FORMAT, kind)


def test_a_cache_forged_elsewhere_is_never_opened(tmp_path: Path) -> None:
    """A well-formed cache committed to the tree cannot vouch for a file: its names are keyed
    with a secret from the checking user's own cache folder, which the tree cannot know."""
    project = _project(tmp_path, {"app.py": ABC_FIRST})
    attacker = {"XDG_CACHE_HOME": str(tmp_path / "attacker-home")}
    assert _check(project, env=attacker).returncode == 0
    # The forgery: the clean file's summary, re-labelled with the hash of the bad content.
    (project / "app.py").write_text(SSL_FIRST)
    cache = project / ".patchaudit_cache"
    (files,) = cache.glob("files-*.jsonl")
    header, rows = _jsonl_lines(files)
    ((head, summary),) = rows
    relpath, entry = head
    assert relpath == "app.py"
    assert entry[1] == content_hash(ABC_FIRST.encode())  # FileEntry.digest
    assert decode_summary(summary) is not None  # the clean file's summary, kept as it is
    entry[0], entry[1] = None, content_hash(SSL_FIRST.encode())
    files.write_text(_jsonl(header, [(head, summary)]))
    # With the attacker's own secret the forged entry would hide the error ...
    assert _check(project, env=attacker).returncode == 0
    forged = files.read_bytes()
    # ... on anyone else's machine it is not even opened.
    victim = _check(project, env={"XDG_CACHE_HOME": str(tmp_path / "victim-home")})
    assert victim.returncode == 1
    assert victim.stdout.startswith("app.py:1:1: MPA101 importing `ssl` loads")
    assert files.read_bytes() == forged  # left alone: the victim's cache has other names


DAMAGES = [
    "garbage",
    "truncated",
    "wrong-version",
    "wrong-shape",
    "wrong-type",
    "smuggled-object",
    "deep-nesting",
    "deep-nesting-inside",
]
SUMMARY_DAMAGES = ["smuggled-object", "deep-nesting-inside"]  # .jsonl: the summaries only
DEEP = "[" * 100_000 + "]" * 100_000


def _smuggled(marker: Path) -> dict[str, object]:
    evil = {"py/reduce": [{"py/function": "builtins.open"}, [str(marker), "w"]]}
    return {"__class__": "os.system", "args": [f"touch {marker}"], **evil}


def _damage_document(text: str, damage: str, marker: Path) -> str:
    """A JSON cache document (modules, stage, gevent patch lists) damaged as ``damage`` says."""
    document = json.loads(text)
    entries = document.get("entries")  # a dict (modules), a list (stage), absent (gevent)
    if damage == "garbage":
        return "\x00not json at all{"
    if damage == "truncated":
        return text[: len(text) // 2]
    if damage == "wrong-version":
        return json.dumps({**document, "format": 999, "schema": 999})
    if damage == "wrong-shape":
        return json.dumps({"entries": [1, 2, 3]} if "entries" in document else [document])
    if damage == "wrong-type":  # every field replaced by a string, same count
        if isinstance(entries, dict):
            bad: object = {k: [str(v) for v in value] for k, value in entries.items()}
        elif isinstance(entries, list):
            bad = [str(v) for v in entries]
        else:
            return json.dumps({k: v if k == "schema" else str(v) for k, v in document.items()})
        return json.dumps({**document, "entries": bad})
    if damage == "smuggled-object":
        swapped = _smuggled(marker)
        return json.dumps({**document, "entries": {"app.py": swapped}, "schema": swapped})
    if damage == "deep-nesting":
        return f'{{"format": {FORMAT}, "kind": "{document.get("kind")}", "entries": {DEEP}}}'
    assert damage == "deep-nesting-inside"  # a well-formed document, one value nested deep
    if isinstance(entries, dict):
        inner = {**document, "entries": {**entries, next(iter(entries)): "@deep@"}}
    elif isinstance(entries, list):
        inner = {**document, "entries": [entries[0], "@deep@", *entries[2:]]}
    else:
        inner = {**document, "by_option": "@deep@"}
    return json.dumps(inner).replace('"@deep@"', DEEP)


def _damage_lines(text: str, damage: str, marker: Path) -> str:
    """The files cache (``.jsonl``) damaged as ``damage`` says."""
    header, rows = json.loads(text.split("\n", 1)[0]), []
    for line in text.split("\n")[1:-1]:
        head, _, summary = line.partition("\t")
        rows.append((json.loads(head), summary))
    if damage == "garbage":
        return "\x00not json at all{"
    if damage == "truncated":
        return text[: len(text) // 2]
    if damage == "wrong-version":  # the header of another format
        return _jsonl({"format": 999, "kind": "files"}, rows)
    if damage == "wrong-shape":  # a line that is not [relpath, entry]
        return _jsonl(header, [({"relpath": h[0], "entry": h[1]}, s) for h, s in rows])
    if damage == "wrong-type":  # every field of every entry a string, same count
        return _jsonl(header, [([h[0], [str(v) for v in h[1]]], s) for h, s in rows])
    if damage == "smuggled-object":  # an object in place of each summary
        return _jsonl(header, [(h, json.dumps(_smuggled(marker))) for h, _ in rows])
    if damage == "deep-nesting":  # the first line's [relpath, entry]
        (first, summary), *rest = rows
        lines = _jsonl(header, rest).split("\n", 1)
        return f"{lines[0]}\n{DEEP}\t{summary}\n{lines[1]}"
    assert damage == "deep-nesting-inside"  # each summary nested deep: found when decoded
    return _jsonl(header, [(h, DEEP) for h, _ in rows])


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_cache_is_ignored_and_rebuilt(tmp_path: Path, damage: str) -> None:
    project = _project(tmp_path)
    _settle(project)
    first = _check(project, "--format", "json")
    marker = tmp_path / "pwned"
    paths = _cache_files(project)
    assert _kinds(paths) == KINDS
    for path in paths:
        damage_file = _damage_lines if path.suffix == ".jsonl" else _damage_document
        damaged = damage_file(path.read_text(), damage, marker)
        assert damaged != path.read_text()
        path.write_text(damaged)
    second = _check(project, "--format", "json")
    assert not marker.exists()
    assert second.returncode == first.returncode == 1
    assert second.stderr == ""  # nothing for the user to act on
    assert _findings(second) == _findings(first) == EXPECTED
    assert json.loads(second.stdout)["errors"] == []
    # Rebuilt: the next run reads every cache file without a complaint.
    third = _check(project, "--format", "json", env={"PATCHAUDIT_DEBUG": "1"})
    assert third.stderr == ""
    assert _findings(third) == EXPECTED
    header, rows = _jsonl_lines(paths[0])
    assert header == {"format": FORMAT, "kind": "files"}
    assert [head[0] for head, _ in rows] == ["app.py", "worker.py"]
    if damage not in SUMMARY_DAMAGES:  # the whole file was discarded and written anew
        assert [decode_summary(text) is not None for _, text in rows] == [True, True]


@pytest.mark.parametrize("damage", SUMMARY_DAMAGES)
def test_a_damaged_summary_is_parsed_again_and_written_back(tmp_path: Path, damage: str) -> None:
    project = _project(tmp_path)
    _settle(project)
    _check(project)
    cache = project / ".patchaudit_cache"
    (files,) = cache.glob("files-*.jsonl")
    (stage,) = cache.glob("stage-*.json")
    marker = tmp_path / "pwned"
    files.write_text(_damage_lines(files.read_text(), damage, marker))
    stage.unlink()  # the project stage must run, so the summaries are decoded
    second = _check(project, "--format", "json")
    assert not marker.exists()
    assert (second.returncode, second.stderr, _findings(second)) == (1, "", EXPECTED)
    _header, rows = _jsonl_lines(files)
    assert [decode_summary(text) is not None for _, text in rows] == [True, True]


def _last_line_not_an_array(text: str) -> str:
    header, rows = json.loads(text.split("\n", 1)[0]), []
    for line in text.split("\n")[1:-1]:
        head, _, summary = line.partition("\t")
        rows.append((json.loads(head), summary))
    (relpath, entry), summary = rows[-1]
    return _jsonl(header, [*rows[:-1], ({"relpath": relpath, "entry": entry}, summary)])


@pytest.mark.parametrize(
    ("kind", "damage", "message"),
    [
        ("files", "[]", "ValueError: not a patchaudit files cache of this format"),
        ("files", "one-line", "ShapeError: expected a list of 2"),
        ("stage", "[]", "ValueError: not a patchaudit cache document"),
    ],
)
def test_ignored_cache_file_gives_one_debug_line(
    tmp_path: Path, kind: str, damage: str, message: str
) -> None:
    project = _project(tmp_path)
    _settle(project)
    _check(project)
    (path,) = (project / ".patchaudit_cache").glob(f"{kind}-*.json*")
    path.write_text("[]" if damage == "[]" else _last_line_not_an_array(path.read_text()))
    result = _check(project, env={"PATCHAUDIT_DEBUG": "1"})
    debug = [line for line in result.stderr.splitlines() if "debug" in line]
    assert debug == [f"patchaudit: debug: ignoring cache file {path}: {message}"], result.stderr
    assert result.returncode == 1
    assert result.stdout.startswith("app.py:1:1: MPA101 importing `ssl` loads")


def test_one_bad_line_discards_the_whole_files_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from patchaudit._config import load_config
    from patchaudit.rules import REGISTRY
    from patchaudit.static import _engine, check

    cache = tmp_path / "cache"
    monkeypatch.setenv("PATCHAUDIT_CACHE_DIR", str(cache))
    monkeypatch.setattr(_cache, "RACY_NS", 0)  # files written just now are trusted at once
    project = _project(
        tmp_path, {"app.py": SSL_FIRST, "worker.py": STALE_SLEEP, "z.py": "import os\n"}
    )
    monkeypatch.chdir(project)
    config = load_config([Path(".")], REGISTRY.keys())
    read: list[str] = []
    real_read = _engine.read_regular

    def counting(path: object, limit: int) -> bytes:
        read.append(Path(str(path)).name)
        return real_read(path, limit)

    monkeypatch.setattr(_engine, "read_regular", counting)

    def places() -> set[tuple[str, str, int]]:
        report = check([Path(".")], config, cwd=project)
        assert report.errors == []
        return {(f.rule, f.path, f.line) for f in report.findings}

    assert places() == EXPECTED
    assert sorted(read) == ["app.py", "worker.py", "z.py"]
    read.clear()
    assert places() == EXPECTED
    assert read == []  # warm: every file's row is used, none is read
    (files,) = cache.glob("files-*.jsonl")
    files.write_text(_last_line_not_an_array(files.read_text()))  # z.py's line
    monkeypatch.setenv("PATCHAUDIT_DEBUG", "1")
    capsys.readouterr()
    assert places() == EXPECTED
    assert sorted(read) == ["app.py", "worker.py", "z.py"]  # the good lines were dropped too
    assert capsys.readouterr().err.splitlines() == [
        f"patchaudit: debug: ignoring cache file {files}: ShapeError: expected a list of 2"
    ]
    read.clear()
    assert places() == EXPECTED
    assert read == []  # rebuilt


def test_plain_form_round_trips_every_summary_exactly(tmp_path: Path) -> None:
    rows: dict[str, tuple[FileEntry, str]] = {}
    summaries = []
    for index, path in enumerate(sorted((FIXTURES / "rules").rglob("*.py"))):
        summary = summarize(path.name, "pkg.mod", index % 2 == 0, path.read_bytes())
        summaries.append(summary)
        text, digest = encode_summary(summary)
        assert digest == content_hash(text.encode())
        assert encode_summary(summary) == (text, digest)  # equal summaries, equal digests
        back = decode_summary(text)
        assert back == summary
        assert repr(back) == repr(summary)  # tuples stay tuples, frozensets, int keys ints
        key = (1, 2, 3, index)
        entry = FileEntry(key, "d", "pkg.mod", False, frozenset({"gevent"}), True, digest)
        rows[str(path)] = (entry, text)
    assert any(s.hits for s in summaries)
    assert any(s.suppressions.lines for s in summaries)
    assert any(p.keywords for s in summaries for p in s.patch_points)
    assert encode_summary(None) == ("null", None)
    assert decode_summary("null") is None
    # [relpath, FileEntry]: the plain form of a line's first half
    pairs = [(relpath, entry) for relpath, (entry, _) in rows.items()]
    text = json.dumps(encoder(list[tuple[str, FileEntry]])(pairs))
    back_pairs = decoder(list[tuple[str, FileEntry]])(json.loads(text))
    assert back_pairs == pairs
    assert repr(back_pairs) == repr(pairs)
    # and whole lines, through the files cache itself
    folder = _cache.Folder(tmp_path / "cache", in_tree=False)
    stored = {relpath: _cache.FileRow(entry, text) for relpath, (entry, text) in rows.items()}
    stored["none.py"] = _cache.FileRow(
        FileEntry(None, "e", None, True, frozenset(), False, None), "null"
    )
    _cache.store_files(folder, "files-test.jsonl", stored)
    loaded = _cache.load_files(folder, "files-test.jsonl")
    assert list(loaded) == list(stored)
    assert {k: (r.entry, r.text) for k, r in loaded.items()} == {
        k: (r.entry, r.text) for k, r in stored.items()
    }
    assert repr([r.entry for r in loaded.values()]) == repr([r.entry for r in stored.values()])
    assert [decode_summary(loaded[str(p)].text) for p in sorted(rows)] == [
        decode_summary(rows[p][1]) for p in sorted(rows)
    ]


VALID_ENTRY = [[1, 2, 3, 4], "d", "pkg.mod", False, ["gevent"], True, "digest"]


def test_decoder_accepts_a_valid_line_head() -> None:
    relpath, entry = decoder(tuple[str, FileEntry])(["a.py", VALID_ENTRY])
    assert relpath == "a.py"
    assert entry == FileEntry(
        (1, 2, 3, 4), "d", "pkg.mod", False, frozenset({"gevent"}), True, "digest"
    )


@pytest.mark.parametrize(
    "plain",
    [
        ["a", [None, "d", None, False, [], True, {"__class__": "x"}]],  # digest not a string
        ["a", [[1, 2, 3, True], "d", None, False, [], True, None]],  # bool is not an int
        ["a", [[1, 2, 3], "d", None, False, [], True, None]],  # a stat field short
        ["a", [None, "d", None, False, {"frozenset": []}, True, None]],  # tags only for Any
        ["a", [None, "d", None, False, [1], True, None]],  # mentions are strings
        ["a", [None, "d", None, 0, [], True, None]],  # an int is not a bool
        ["a", [None, "d", None, False, [], True]],  # a field short
        ["a", [*VALID_ENTRY, None]],  # a field too many
        ["a", {"stat": None, "digest": "d"}],  # fields by name
        [1, VALID_ENTRY],  # the relpath not a string
        ["a", VALID_ENTRY, "extra"],  # more than [relpath, entry]
        ["a"],  # no entry
        {"a": VALID_ENTRY},  # the old files cache's shape
    ],
)
def test_decoder_is_strict(plain: object) -> None:
    with pytest.raises(ShapeError):
        decoder(tuple[str, FileEntry])(plain)


# -- the cache cannot be redirected -----------------------------------------------------------


def test_symlinked_cache_folder_is_not_used(tmp_path: Path) -> None:
    project = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / ".patchaudit_cache").symlink_to(elsewhere)
    warning = "patchaudit: warning: cache not used: .patchaudit_cache is a symbolic link; delete it"
    for fmt in ("full", "concise", "json", "github"):  # whatever the format, on stderr, once
        result = _check(project, "--format", fmt, "--no-color")
        assert result.returncode == 1
        assert result.stderr.splitlines() == [warning]
        assert "MPA101" in result.stdout and "MPA201" in result.stdout
    assert list(elsewhere.iterdir()) == []


def test_cache_folder_that_is_a_file_is_not_used(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / ".patchaudit_cache").write_text("not a folder")
    result = _check(project, "--format", "sarif")
    assert result.returncode == 1
    notes = [
        n["message"]["text"]
        for n in json.loads(result.stdout)["runs"][0]["invocations"][0].get(
            "toolExecutionNotifications", []
        )
    ]
    assert notes == ["cache not used: .patchaudit_cache is not a folder; delete it"]
    assert result.stderr == (
        "patchaudit: warning: cache not used: .patchaudit_cache is not a folder; delete it\n"
    )
    assert (project / ".patchaudit_cache").read_text() == "not a folder"


def test_links_inside_the_cache_folder_are_replaced_not_written_through(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _check(project)
    cache = project / ".patchaudit_cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {}
    for path in sorted(cache.iterdir()):
        victim = outside / path.name
        victim.write_text("keep me")
        victims[victim] = "keep me"
        path.unlink()
        path.symlink_to(victim)
    # Dangling links: writing through them would create files outside.
    (cache / "CACHEDIR.TAG").unlink()
    (cache / "CACHEDIR.TAG").symlink_to(outside / "created-tag")
    (cache / ".gitignore").unlink()
    (cache / ".gitignore").symlink_to(outside / "created-gitignore")
    (project / "app.py").write_text(ABC_FIRST)  # something to write back
    result = _check(project, "--format", "json")
    assert result.returncode == 1
    assert _findings(result) == {("MPA201", "worker.py", 1)}
    assert {p: p.read_text() for p in victims} == victims
    assert not (outside / "created-tag").exists()
    assert not (outside / "created-gitignore").exists()
    for path in cache.iterdir():
        assert not path.is_symlink(), path
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f")


def test_fifo_in_place_of_cache_files_does_not_hang(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _settle(project)
    first = _check(project)
    paths = _cache_files(project)
    assert _kinds(paths) == KINDS
    for path in paths:
        path.unlink()
        os.mkfifo(path)
    result = _check(project, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (1, first.stdout, "")


# -- the cache is keyed by content ------------------------------------------------------------


def test_same_size_same_mtime_edit_is_seen(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": ABC_FIRST})
    app = project / "app.py"
    time.sleep(2.1)  # older than the racy window, so the cache trusts its stat fields
    assert _check(project).returncode == 0
    assert _check(project).returncode == 0  # warm
    before = app.stat()
    app.write_text(SSL_FIRST)
    os.utime(app, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = app.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    result = _check(project)
    assert result.returncode == 1
    assert result.stdout.startswith("app.py:1:1: MPA101 importing `ssl` loads")


# -- discovery stays in the project root ------------------------------------------------------


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text(OUTSIDE_SOURCE)
    return outside


def test_links_out_of_the_root_are_not_followed(tmp_path: Path) -> None:
    project = _project(tmp_path)
    outside = _outside(tmp_path)
    (project / "rootlink").symlink_to("/")
    (project / "linked").symlink_to(outside)
    (project / "leak.py").symlink_to(outside / "secret.py")
    (project / "inside.py").symlink_to(project / "worker.py")  # within the tree: followed
    start = time.monotonic()
    result = _check(project, "--format", "json", timeout=30)
    assert time.monotonic() - start < 15
    data = json.loads(result.stdout)
    assert data["errors"] == [
        "skipped leak.py: symlink to outside the project root, not followed",
        "skipped linked/: symlink to outside the project root, not followed",
        "skipped rootlink/: symlink to outside the project root, not followed",
    ]
    assert _findings(result) == EXPECTED | {("MPA201", "inside.py", 1)}
    assert SECRET not in result.stdout + result.stderr


def test_full_format_prints_no_outside_source(tmp_path: Path) -> None:
    project = _project(tmp_path)
    outside = _outside(tmp_path)
    (project / "leak.py").symlink_to(outside / "secret.py")
    (project / "inside.py").symlink_to(project / "worker.py")
    result = _check(project, "--format", "full", "--no-color")
    assert SECRET not in result.stdout + result.stderr
    # a link within the tree still shows its lines, read from the real file
    assert "inside.py:1:1" in result.stdout
    assert result.stdout.count(" 1 | from time import sleep") == 2  # worker.py, inside.py


def test_paths_named_outside_the_root_are_skipped(tmp_path: Path) -> None:
    project = _project(tmp_path)
    outside = _outside(tmp_path)
    (project / "leak.py").symlink_to(outside / "secret.py")
    result = _check(project, ".", "leak.py", "../outside/secret.py", "--format", "json")
    data = json.loads(result.stdout)
    assert sorted(data["errors"]) == [
        f"skipped ../outside/secret.py: outside the project root {project}",
        f"skipped leak.py: outside the project root {project}",
        "skipped leak.py: symlink to outside the project root, not followed",
    ]
    assert _findings(result) == EXPECTED
    assert SECRET not in result.stdout


def test_a_project_elsewhere_is_checked_with_its_own_root(tmp_path: Path) -> None:
    project = _project(tmp_path)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = _check(elsewhere, str(project), "--format", "json")
    assert json.loads(result.stdout)["errors"] == []
    assert {(r, Path(p).name) for r, p, _ in _findings(result)} == {
        ("MPA101", "app.py"),
        ("MPA201", "worker.py"),
    }


def test_fifo_named_like_a_module_is_never_opened(tmp_path: Path) -> None:
    project = _project(tmp_path, {"app.py": "import stuck\n" + STALE_SLEEP})
    os.mkfifo(project / "stuck.py")  # discovery skips it; the import must not read it either
    result = _check(project, "--format", "json", timeout=30)
    assert json.loads(result.stdout)["errors"] == ["skipped stuck.py: not a regular file"]
    assert _findings(result) == {("MPA201", "app.py", 2)}


# -- --output ---------------------------------------------------------------------------------


def test_output_refuses_a_fifo_and_a_symlink(tmp_path: Path) -> None:
    project = _project(tmp_path)
    os.mkfifo(project / "report.fifo")
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    (project / "report.txt").symlink_to(target)
    for name, what in (
        ("report.fifo", "is not a regular file"),
        ("report.txt", "is a symbolic link"),
    ):
        result = _check(project, "--output", name, timeout=30)
        assert result.returncode == 2
        assert result.stderr == (
            f"patchaudit: error: refusing to write {name}: it {what}; name a regular file "
            "(or redirect standard output)\n"
        )
    assert target.read_text() == "keep me"
    ok = _check(project, "--output", "plain.txt")
    assert ok.returncode == 1 and "MPA101" in (project / "plain.txt").read_text()


# -- parser limits ----------------------------------------------------------------------------


def test_deep_but_valid_python_is_analysed_not_mpa001(tmp_path: Path) -> None:
    deep = (
        "x = " + " + ".join(["1"] * 500) + "\n"
        "y = os" + ".path" * 1500 + "\n"
        "z = " + "int(" * 150 + "1" + ")" * 150 + "\n"
        "w = " + " if x else ".join(["x"] * 600) + "\n"
    )
    project = _project(tmp_path, {"deep.py": "import os\n" + deep + STALE_SLEEP})
    result = _check(project, "--format", "json")
    assert _findings(result) == {("MPA201", "deep.py", 6)}


def test_files_over_max_file_size_are_skipped_with_an_info(tmp_path: Path) -> None:
    big = "import gevent\n" + "value = 1\n" * 200
    project = _project(tmp_path, {"big.py": big, "worker.py": STALE_SLEEP})
    result = _check(project, "--format", "json", "--max-file-size", "1KiB")
    data = json.loads(result.stdout)
    assert [(f["rule"], f["path"], f["severity"], f["message"]) for f in data["findings"]] == [
        (
            "MPA003",
            "big.py",
            "info",
            f"not analysed: {len(big)} bytes is over max-file-size (1024 bytes)",
        ),
        ("MPA201", "worker.py", "error", data["findings"][1]["message"]),
    ]
    assert data["errors"] == []
    bad = _check(project, "--max-file-size", "lots")
    assert bad.returncode == 2
    assert "'max-file-size' must be a number of bytes" in bad.stderr


def test_default_max_file_size_skips_a_5_mb_file_fast(tmp_path: Path) -> None:
    big = "import gevent\n" + "value = 1\n" * 500_000
    project = _project(tmp_path, {"big.py": big, "worker.py": STALE_SLEEP})
    start = time.monotonic()
    result = _check(project, "--format", "json", "--no-cache")
    assert time.monotonic() - start < 10
    assert ("MPA003", "big.py", 1) in _findings(result)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def _rss_mb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def test_a_worker_killed_mid_parse_costs_one_file(tmp_path: Path) -> None:
    # An out-of-memory killer of our own: SIGKILL any worker of the run that grows past 200 MB,
    # which only the one parsing the big module does. Every other file must still be analysed.
    files = {f"mod{i}.py": STALE_SLEEP for i in range(60)}
    files["big.py"] = "import gevent\n" + "".join(f"value_{i} = {i}\n" for i in range(100_000))
    project = _project(tmp_path, files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHAUDIT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "patchaudit", "check", "-j", "2", "--no-cache", "--format", "json"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed: list[int] = []
    done = threading.Event()

    def watchdog() -> None:
        while not done.is_set():
            for child in _children(process.pid):
                if _rss_mb(child) > 200:
                    os.kill(child, signal.SIGKILL)
                    killed.append(child)
            time.sleep(0.01)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        out, err = process.communicate(timeout=90)
    finally:
        done.set()
        process.kill()
    assert killed, "the big file never made a worker grow past 200 MB"
    data = json.loads(out)
    assert data["errors"] == [f"big.py: {WORKER_DIED}"], err
    assert _findings(data) == {("MPA201", f"mod{i}.py", 1) for i in range(60)}
    assert process.returncode == 1
