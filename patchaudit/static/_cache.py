"""The on-disk cache: plain JSON data, keyed by content, in a folder a checked tree cannot redirect.

Layout of ``.patchaudit_cache/`` (or ``$PATCHAUDIT_CACHE_DIR``):

* ``files-<key>.jsonl``: a header line, then one line per file: ``[relpath, FileEntry]``, a tab,
  and the file's summary (or ``null``). ``<key>`` hashes the tool version, its source files, the
  Python version and the configuration. An entry is valid for a file whose content hash, module
  name and package flag are the entry's; the stat fields (size, mtime, ctime, inode:
  ``os.utime`` cannot set ctime back, as git's index relies on) only decide whether the file
  must be read and hashed again. Summaries are decoded only when the project stage needs them
  (a warm run that reuses the stage's output needs none), and an unchanged line is written back
  as it was read: a warm run neither decodes nor encodes what did not change.
* ``modules-<python>-<key>.json``: summaries of modules read outside the project's files
  (excluded files of the tree), keyed by path and the same stat fields; installed modules go
  to ``installed-<python>-<key>.json``, one per search-path entry, in the folder every project
  of the user shares (:func:`shared_folder`).

Every ``<key>`` is keyed with a secret kept in the user's own cache folder
(:func:`patchaudit._safeio.local_secret`): a cache folder committed to a checked tree holds no
name this machine would open, so crafted entries cannot claim a file is clean.
* ``gevent-patches-<key>.json``: written by :mod:`patchaudit._gevent_patches`.
* ``stage-<key>.json``: the project stage's last output and what it read (see ``_stage``).

The cache is data only, never pickle: loading is ``json.loads`` plus a strict, type-driven check
(:mod:`._plain`), so a crafted file can at worst be ignored. Any file that is not exactly what
this version writes (another format version, wrong shape or types, truncated, not JSON, not a
regular file) is ignored with a debug line and rebuilt. Files are read and written through
:mod:`patchaudit._safeio`. An in-tree cache folder that is a symlink or not a folder is not used.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _safeio
from .._version import __version__
from ._plain import decoder, encoder
from ._summary import FileSummary

if TYPE_CHECKING:
    from ._modules import ModuleNode

FORMAT = 3  # bump when the layout or any cached dataclass changes
FOLDER_NAME = ".patchaudit_cache"
CACHEDIR_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# patchaudit cache\n"
_MARKERS = (("CACHEDIR.TAG", CACHEDIR_TAG), (".gitignore", "*\n"))
StatKey = tuple[int, int, int, int]  # (size, mtime_ns, ctime_ns, inode)
RACY_NS = 2_000_000_000  # coarser than any file system's timestamps but FAT's
MAX_FILE_BYTES = 256 * 1024 * 1024  # a cache file planted to exhaust memory is not read


@dataclass(frozen=True)
class FileEntry:
    stat: StatKey | None  # None: changed too recently to trust (see stat_key), hash it again
    digest: str
    module: str | None
    is_package: bool
    mentions: frozenset[str]
    relevant: bool
    summary_digest: str | None  # hash of the summary's plain form; None: not parsed


@dataclass
class FileRow:
    """One line of the files cache: the entry, and the summary in its stored form."""

    entry: FileEntry
    text: str  # the summary's plain form as JSON, "null" for none (see decode_summary)
    head: str | None = None  # ``[relpath, entry]`` as read from the cache: written back as is


def decode_summary(text: str) -> FileSummary | None:
    """A stored summary, decoded and checked now; None if there is none or it is damaged."""
    if text == "null":
        return None
    try:
        return decoder(FileSummary)(json.loads(text))
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        _safeio.debug(f"ignoring a cached summary: {_describe(exc)}")
        return None


FileEntries = dict[str, FileRow]
ModuleEntries = dict[str, tuple[StatKey, "ModuleNode"]]


@dataclass(frozen=True)
class Folder:
    path: Path
    in_tree: bool  # .patchaudit_cache in the checked tree, not $PATCHAUDIT_CACHE_DIR

    def file(self, name: str) -> Path:
        return self.path / name


def cache_folder(root: Path) -> tuple[Folder | None, str | None]:
    """The folder to use, or None and a one-line reason when it must not be used.

    ``$PATCHAUDIT_CACHE_DIR`` is the user's own choice and may be a symlink; the in-tree
    ``.patchaudit_cache`` comes with the checked tree, so it is used only if it is a real folder
    (or absent: it is created on the first write).
    """
    env = os.environ.get("PATCHAUDIT_CACHE_DIR")
    folder = Folder(Path(env), False) if env else Folder(root / FOLDER_NAME, True)
    try:
        st = os.lstat(folder.path) if folder.in_tree else os.stat(folder.path)
    except FileNotFoundError:
        return folder, None
    except OSError as exc:
        return None, _safeio.reason(exc)
    if stat.S_ISLNK(st.st_mode):
        return None, "is a symbolic link; delete it"
    if not stat.S_ISDIR(st.st_mode):
        return None, "is not a folder; delete it" if folder.in_tree else "is not a folder"
    return folder, None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def stat_key(st: os.stat_result, started_ns: int) -> StatKey | None:
    """What says "unchanged" next time, or None for a file changed less than 2 s before
    ``started_ns``: an edit later in the same timestamp tick would look unchanged (like git's
    "racy" index entries, these are hashed again next time)."""
    if st.st_ctime_ns >= started_ns - RACY_NS:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def same_stat(st: os.stat_result, key: StatKey | None) -> bool:
    return key is not None and key == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def files_name(config_fingerprint: str) -> str:
    text = f"{__version__}|{_code_fingerprint()}|{sys.version}|{config_fingerprint}"
    return f"files-{_keyed(text)}.jsonl"


def encode_summary(summary: FileSummary | None) -> tuple[str, str | None]:
    """A summary made in this run in its stored form, and its digest (taken from that form, so
    equal summaries have equal digests): encoded once, for the cache and the stage's key."""
    if summary is None:
        return "null", None
    text = json.dumps(encoder(FileSummary)(summary), separators=(",", ":"))
    return text, content_hash(text.encode())


def modules_name() -> str:
    return f"modules-{sys.version_info[0]}{sys.version_info[1]}-{_keyed(sys.version)}.json"


def _keyed(text: str) -> str:
    """A name part no checked tree can predict (see :func:`patchaudit._safeio.local_secret`)."""
    key = _safeio.local_secret().encode()
    return hashlib.blake2b(text.encode(), key=key, digest_size=8).hexdigest()


@functools.cache
def _code_fingerprint() -> str:
    """Sizes and mtimes of patchaudit's own files: an edited rule invalidates cached summaries
    even when the version number did not change (editable installs, development)."""
    package = Path(__file__).resolve().parent.parent
    parts = []
    for folder, _dirs, names in sorted(os.walk(package)):
        for name in sorted(names):
            if name.endswith((".py", ".toml")):
                st = os.stat(os.path.join(folder, name))
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def load_files(folder: Folder, name: str) -> FileEntries:
    """Every row of the files cache; empty when it is missing or not exactly what this
    version writes (one bad line discards the file: it is rebuilt)."""
    path = folder.file(name)
    try:
        data = _safeio.read_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        _safeio.debug(f"ignoring cache file {path}: {_safeio.reason(exc)}")
        return {}
    collecting = gc.isenabled()
    gc.disable()  # many small objects, no cycles (see _load)
    try:
        lines = data.decode().split("\n")
        if json.loads(lines[0]) != _files_header():
            raise ValueError("not a patchaudit files cache of this format")
        if lines[-1] != "":
            raise ValueError("truncated")
        rows: FileEntries = {}
        decode = decoder(tuple[str, FileEntry])
        for line in lines[1:-1]:
            head, tab, text = line.partition("\t")
            relpath, entry = decode(json.loads(head))
            if not tab or relpath in rows or ("\t" in text):
                raise ValueError("not a files cache line")
            if (text == "null") != (entry.summary_digest is None):
                raise ValueError("summary and digest disagree")
            rows[relpath] = FileRow(entry, text, head)
        return rows
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        _safeio.debug(f"ignoring cache file {path}: {_describe(exc)}")
        return {}
    finally:
        if collecting:
            gc.enable()


def store_files(folder: Folder, name: str, rows: FileEntries) -> None:
    """Write every row; a row read from the cache is written back as it was read."""
    encode = encoder(tuple[str, FileEntry])
    parts = [json.dumps(_files_header(), separators=(",", ":")), "\n"]
    try:
        for relpath, row in rows.items():
            head = row.head or json.dumps(encode((relpath, row.entry)), separators=(",", ":"))
            parts += [head, "\t", row.text, "\n"]
    except (TypeError, ValueError) as exc:
        _safeio.debug(f"not caching {name}: {_describe(exc)}")
        return
    _write(folder, name, "".join(parts).encode())  # ASCII: json.dumps escapes the rest


def _files_header() -> dict[str, object]:
    return {"format": FORMAT, "kind": "files"}


def shared_folder() -> Folder:
    """Where summaries of installed modules are kept for every project of this user:
    ``$PATCHAUDIT_CACHE_DIR`` when set (the user's cache for everything), else
    ``$XDG_CACHE_HOME/patchaudit/installed``. A checked tree never decides it."""
    env = os.environ.get("PATCHAUDIT_CACHE_DIR")
    if env:
        return Folder(Path(env), False)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Folder(Path(base) / "patchaudit" / "installed", False)


def load_modules(folder: Folder, search_path: Sequence[str]) -> ModuleEntries:
    """The summaries of modules read outside the project's files: the project's own file (files
    in the tree that the project's files do not include), then one shared file per entry of
    the search path (an installed package is read once for every project that imports it)."""
    entries = _load(folder.file(modules_name()), "modules", _module_entries()) or {}
    shared = shared_folder()
    for entry in search_path:
        entries.update(_load(shared.file(_shard_name(entry)), "modules", _module_entries()) or {})
    return entries


def store_modules(
    folder: Folder, entries: ModuleEntries, changed: set[str], search_path: Sequence[str]
) -> None:
    """Write back each file that holds one of the ``changed`` paths, with all its entries."""
    shards: dict[str | None, ModuleEntries] = {}
    for path, entry in entries.items():
        shards.setdefault(_shard_of(path, search_path), {})[path] = entry
    dirty = {_shard_of(path, search_path) for path in changed}
    for shard, part in shards.items():
        if shard not in dirty:
            continue
        if shard is None:
            _store(folder, modules_name(), "modules", _module_entries(), part)
        else:
            _store(shared_folder(), _shard_name(shard), "modules", _module_entries(), part)


def _shard_of(path: str, search_path: Sequence[str]) -> str | None:
    """The search-path entry a module was found under (the longest), None for any other."""
    found = None
    for entry in search_path:
        if path.startswith(entry.rstrip(os.sep) + os.sep) and len(entry) > len(found or ""):
            found = entry
    return found


def _shard_name(entry: str) -> str:
    version = f"{sys.version_info[0]}{sys.version_info[1]}"
    return f"installed-{version}-{_keyed(sys.version + '|' + entry)}.json"


def load_stage(folder: Folder, name: str, tp: Any) -> Any:
    return _load(folder.file(name), "stage", tp)


def store_stage(folder: Folder, name: str, tp: Any, entry: Any) -> None:
    _store(folder, name, "stage", tp, entry)


def _module_entries() -> Any:
    from ._modules import ModuleNode  # _modules uses stat_key from here

    return dict[str, tuple[StatKey, ModuleNode]]


def _load(path: Path, kind: str, tp: Any) -> Any:
    try:
        data = _safeio.read_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _safeio.debug(f"ignoring cache file {path}: {_safeio.reason(exc)}")
        return None
    # Tens of thousands of small objects and no cycles: without the collector running over
    # them as they are made, loading takes about half the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        document = json.loads(data)
        if type(document) is not dict or set(document) != {"format", "kind", "entries"}:
            raise ValueError("not a patchaudit cache document")
        if document["format"] != FORMAT or document["kind"] != kind:
            raise ValueError(f"format {document['format']!r} {document['kind']!r}")
        return decoder(tp)(document["entries"])
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        _safeio.debug(f"ignoring cache file {path}: {_describe(exc)}")
        return None
    finally:
        if collecting:
            gc.enable()


def _store(folder: Folder, name: str, kind: str, tp: Any, value: Any) -> None:
    try:
        document = {"format": FORMAT, "kind": kind, "entries": encoder(tp)(value)}
        data = json.dumps(document, separators=(",", ":")).encode()  # ASCII: lone surrogates too
    except (TypeError, ValueError, RecursionError) as exc:  # a value with no plain form
        _safeio.debug(f"not caching {name}: {_describe(exc)}")
        return
    _write(folder, name, data)


def _write(folder: Folder, name: str, data: bytes) -> None:
    try:
        prepare_folder(folder)
        _safeio.write_atomic(folder.file(name), data)
    except OSError as exc:  # a read-only tree still gets checked, just without a cache
        _safeio.debug(f"cannot write cache file {folder.file(name)}: {_describe(exc)}")


def prepare_folder(folder: Folder) -> None:
    """Create the folder if needed and mark it (CACHEDIR.TAG, .gitignore) without writing
    through links: raises OSError when the folder is not a real folder after all."""
    if folder.in_tree:
        try:
            os.mkdir(folder.path)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(folder.path).st_mode):  # a link planted since the check
            raise NotADirectoryError(f"{folder.path} is not a folder")
    else:
        folder.path.mkdir(parents=True, exist_ok=True)
    for marker, text in _MARKERS:
        path = folder.file(marker)
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                continue
        except FileNotFoundError:
            pass
        try:
            _safeio.write_atomic(path, text.encode())  # replaces a planted link, if any
        except OSError:
            continue  # e.g. a folder of that name: the cache works without the marker


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return _safeio.reason(exc)
    return f"{type(exc).__name__}: {exc}"[:200]
