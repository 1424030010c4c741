"""File access that a hostile checked tree cannot redirect or stall.

Everything patchaudit reads from or writes into a checked tree goes through here: source files,
``.gitignore`` files, the cache. Reads never follow a symlink at the last step and never open
anything but a regular file (``lstat`` first: opening a FIFO blocks, opening a device can have
effects); writes go to a new temporary file in the same folder, created with ``O_EXCL`` and
``O_NOFOLLOW``, then ``os.replace`` it, so a symlink planted at the destination is replaced,
never written through. This module imports nothing from patchaudit, so any module can use it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys

__all__ = [
    "FileTooLargeError",
    "NotRegularFileError",
    "debug",
    "local_secret",
    "open_output",
    "read_regular",
    "reason",
    "resolve_within",
    "write_atomic",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_FLAGS = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)  # belt and braces: a FIFO swapped in after lstat can't block
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | _NOFOLLOW
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class NotRegularFileError(OSError):
    """The path is a symlink, a folder, a FIFO, a socket or a device: it was not opened."""


class FileTooLargeError(OSError):
    """The file is bigger than the caller's limit: it was not read."""


def debug(message: str) -> None:
    """One diagnostic line on stderr when ``PATCHAUDIT_DEBUG`` is set (``--debug`` sets it)."""
    if os.environ.get("PATCHAUDIT_DEBUG"):
        print(f"patchaudit: debug: {message}", file=sys.stderr)


_SECRET: list[str] = []


def local_secret() -> str:
    """A random value kept in this user's cache folder (``$XDG_CACHE_HOME/patchaudit``).

    Cache file names include it, so a cache folder committed to a checked tree holds no file
    this machine would ever open: a crafted entry can't vouch for a file it never saw here. When
    the folder can't be written, the secret lives for this process only (no reuse, still safe).
    """
    if _SECRET:
        return _SECRET[0]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "patchaudit", "secret")
    try:
        value = read_regular(path, 64).decode("ascii").strip()
        if len(value) != 32 or not all(c in "0123456789abcdef" for c in value):
            raise ValueError(value)
    except (OSError, ValueError, UnicodeDecodeError):
        value = secrets.token_hex(16)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_atomic(path, value.encode("ascii"), mode=0o600)
        except OSError:
            pass
    _SECRET.append(value)
    return value


def reason(exc: OSError) -> str:
    """A short lower-case description of ``exc`` for one-line messages."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return (exc.strerror or type(exc).__name__).lower()


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``; a final symlink is not followed.

    Raises :class:`NotRegularFileError` (nothing opened) for anything but a regular file,
    :class:`FileTooLargeError` when it is bigger than ``limit`` bytes, or the ``OSError``.
    """
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFileError(errno.EINVAL, _kind(before.st_mode), os.fspath(path))
    if limit is not None and before.st_size > limit:
        raise FileTooLargeError(errno.EFBIG, "file too large", os.fspath(path))
    fd = os.open(path, _READ_FLAGS)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise NotRegularFileError(errno.EINVAL, "changed while being opened", os.fspath(path))
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise FileTooLargeError(errno.EFBIG, "file too large", os.fspath(path))
    return data


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with a file holding ``data``: readers see the old or the new file.

    Whatever ``path`` is (a file, a dangling or planted symlink) is replaced, not written
    through; a folder there makes ``os.replace`` fail with ``OSError``.
    """
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, _CREATE_FLAGS, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def open_output(path: str | os.PathLike[str]) -> int:
    """A descriptor for writing ``path`` (created, or truncated if it is a regular file).

    Raises :class:`NotRegularFileError` when ``path`` is a symlink or exists as anything but a
    regular file (a FIFO would block the writer), without opening it.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, _kind(st.st_mode), os.fspath(path))
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0), 0o666)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped in since the lstat
            raise NotRegularFileError(errno.EINVAL, _kind(st.st_mode), os.fspath(path))
        os.ftruncate(fd, 0)  # only now that it is known to be a regular file
    except BaseException:
        os.close(fd)
        raise
    return fd


def resolve_within(path: str, real_root: str) -> str | None:
    """The real path of ``path`` when it lies in ``real_root`` (itself a real path), else None."""
    real = os.path.realpath(path)
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return real
    return None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISDIR(mode):
        return "is a folder"
    return "is not a regular file"
