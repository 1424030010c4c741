"""The on-disk cache: per-file summaries keyed by content hash, tool version and configuration.

Layout of ``.patchaudit_cache/`` (or ``$PATCHAUDIT_CACHE_DIR``):

* ``files-<key>.pickle``: ``{relpath: (size, mtime_ns, content_hash, summary-or-None)}`` where
  ``<key>`` hashes the tool version, the Python version and the configuration. The stat fields let
  a warm run skip reading unchanged files; the content hash is what decides validity.
* ``modules-<python>.pickle``: summaries of installed modules, keyed by path, size and mtime.

Everything is best effort: a corrupt or unreadable cache is ignored and rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

from .._version import __version__

CACHEDIR_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# patchaudit cache\n"


def cache_dir(root: Path, override: str | None = None) -> Path:
    env = override or os.environ.get("PATCHAUDIT_CACHE_DIR")
    return Path(env) if env else root / ".patchaudit_cache"


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def files_key(config_fingerprint: str) -> str:
    text = f"{__version__}|{_code_fingerprint()}|{sys.version}|{config_fingerprint}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@functools.cache
def _code_fingerprint() -> str:
    """Sizes and mtimes of patchaudit's own files: an edited rule invalidates cached summaries
    even when the version number did not change (editable installs, development)."""
    package = Path(__file__).resolve().parent.parent
    parts = []
    for folder, _dirs, names in sorted(os.walk(package)):
        for name in sorted(names):
            if name.endswith((".py", ".toml")):
                stat = os.stat(os.path.join(folder, name))
                parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def load(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except Exception:  # any damage means "no cache"
        return None


def store(path: Path, value: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = path.parent / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text(CACHEDIR_TAG)
            (path.parent / ".gitignore").write_text("*\n")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only tree still gets checked, just without a cache
