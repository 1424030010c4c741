"""What the installed gevent's ``patch_all()`` replaces, read from gevent itself at run time.

The patch lists change between gevent releases (25.4.1 started patching ``queue.Queue``, 25.8.1
``os.close`` and ``signal.set_wakeup_fd``), between Python versions and platforms, and with
``GEVENT_*`` environment variables. Hard-coding them would make patchaudit wrong as soon as
gevent moves, so :func:`load_patch_lists` runs the probe's patch-lists job
(:mod:`patchaudit.probe`, ``--patch-lists``) in a child interpreter, which patches for real and
reports the result.

This module must stay import-light: it never imports gevent, because importing (let alone
patching) gevent in the auditing process would change the very state being audited.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _safeio, probe

__all__ = [
    "PROBE_JOB",
    "PROBE_SCRIPT",
    "PatchListError",
    "PatchLists",
    "clear_memo",
    "load_patch_lists",
    "patch_lists_key",
]

#: The probe's boot script (the runtime audit's too); run by path with the target interpreter.
PROBE_SCRIPT = Path(probe.BOOT_SCRIPT)
#: The probe job that reports the patch lists.
PROBE_JOB = "--patch-lists"

# Bump when the JSON layout or the meaning of a field changes, so old cache files are ignored.
_SCHEMA = 1

_memo: dict[str, PatchLists] = {}
_memo_lock = threading.Lock()


class PatchListError(Exception):
    """The patch lists could not be obtained; ``str(exc)`` is a one-line, actionable message."""


def _freeze_names(names: Any) -> tuple[str, ...]:
    return tuple(sorted(str(n) for n in names))


@dataclass(frozen=True)
class PatchLists:
    """What ``gevent.monkey.patch_all()`` (all defaults) did in one interpreter.

    Module names are *target* module names, as in ``gevent.monkey.saved``: thread patching
    shows up as ``_thread``, ``threading``, ``_threading_local`` and ``logging``.
    """

    gevent_version: str
    python_version: str
    #: ``patch_all`` keyword -> default, from ``inspect.signature`` of the installed gevent.
    options: dict[str, object]
    #: ``patch_all`` keyword -> target module -> names it replaced or removed. Keys are the
    #: keywords whose patcher ran (``builtins``/``contextvars`` map to ``{}``: called, no-op).
    #: ``dns`` repeats the socket names that ``dns=`` governs (they are also under ``socket``).
    by_option: dict[str, dict[str, tuple[str, ...]]]
    #: target module -> name -> ``"module.qualname"`` of the object in place after patching.
    replacements: dict[str, dict[str, str]]
    #: target module -> names deleted by patching (``aggressive``: ``select.epoll``, ...).
    removed: dict[str, tuple[str, ...]]
    #: Modules already imported when the probe script started (interpreter + site startup).
    startup_modules: frozenset[str]
    implementation: str = ""
    platform: str = ""
    #: Patches gevent applied without recording them in ``gevent.monkey.saved`` (so
    #: ``get_original`` cannot undo or report them), e.g. ``threading._active_limbo_lock``.
    unrecorded: dict[str, dict[str, str]] = field(default_factory=dict)
    #: ``gevent.monkey.patch_*`` functions in the order ``patch_all`` called them.
    call_order: tuple[str, ...] = ()
    #: Warnings ``patch_all`` emitted in the probe (``"Category: message"``).
    warnings: tuple[str, ...] = ()
    #: The parameters positional arguments to ``patch_all`` bind to, in signature order.
    positional: tuple[str, ...] = ()

    def patched_modules(self) -> frozenset[str]:
        """Every target module in which at least one name was replaced or removed."""
        return frozenset(
            mod for mods in self.by_option.values() for mod, names in mods.items() if names
        )

    def patched_names(self, module: str) -> frozenset[str]:
        """Names of ``module`` that ``patch_all()`` replaced or removed (empty if none)."""
        out: set[str] = set()
        for mods in self.by_option.values():
            out.update(mods.get(module, ()))
        return frozenset(out)

    def is_patched(self, module: str, name: str) -> bool:
        """Whether ``module.name`` is no longer the stdlib object after ``patch_all()``."""
        return any(name in mods.get(module, ()) for mods in self.by_option.values())

    def option_for_module(self, module: str) -> str | None:
        """The ``patch_all`` keyword that patches ``module`` ('thread' for 'threading').

        When several keywords touch a module (``socket`` and ``dns`` both list ``socket``),
        a keyword named like the module wins, then the first in ``patch_all`` signature order.
        """
        candidates = [opt for opt, mods in self.by_option.items() if mods.get(module)]
        if not candidates:
            return None
        if module in candidates:
            return module
        order = list(self.options)
        return min(candidates, key=lambda o: (order.index(o) if o in order else len(order), o))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` reverses it (used for the disk cache)."""
        return {
            "schema": _SCHEMA,
            "gevent_version": self.gevent_version,
            "python_version": self.python_version,
            "implementation": self.implementation,
            "platform": self.platform,
            "options": dict(self.options),
            "by_option": {
                opt: {mod: list(names) for mod, names in mods.items()}
                for opt, mods in self.by_option.items()
            },
            "replacements": {mod: dict(items) for mod, items in self.replacements.items()},
            "removed": {mod: list(names) for mod, names in self.removed.items()},
            "startup_modules": sorted(self.startup_modules),
            "unrecorded": {mod: dict(items) for mod, items in self.unrecorded.items()},
            "call_order": list(self.call_order),
            "warnings": list(self.warnings),
            "positional": list(self.positional),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PatchLists:
        """Build from :meth:`to_json` output or from the probe's raw output.

        Raises ``ValueError``/``KeyError``/``TypeError`` on malformed input, which callers
        reading a cache treat as "no cache".
        """
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return cls(
            gevent_version=str(data["gevent_version"]),
            python_version=str(data["python_version"]),
            options=dict(data["options"]),
            by_option={
                str(opt): {str(mod): _freeze_names(names) for mod, names in mods.items()}
                for opt, mods in data["by_option"].items()
            },
            replacements={
                str(mod): {str(k): str(v) for k, v in items.items()}
                for mod, items in data["replacements"].items()
            },
            removed={str(mod): _freeze_names(names) for mod, names in data["removed"].items()},
            startup_modules=frozenset(str(m) for m in data["startup_modules"]),
            implementation=str(data.get("implementation", "")),
            platform=str(data.get("platform", "")),
            unrecorded={
                str(mod): {str(k): str(v) for k, v in items.items()}
                for mod, items in data.get("unrecorded", {}).items()
            },
            call_order=tuple(str(c) for c in data.get("call_order", ())),
            warnings=tuple(str(w) for w in data.get("warnings", ())),
            positional=tuple(str(p) for p in data.get("positional", ())),
        )


def _resolve_interpreter(python: str | None) -> str:
    """Absolute path of the interpreter, *without* resolving symlinks.

    A venv's ``bin/python`` is a symlink to the base interpreter; resolving it would lose the
    venv and with it the gevent installed there.
    """
    if python is None:
        if not sys.executable:
            raise PatchListError("sys.executable is unknown here; pass the Python interpreter")
        return os.path.abspath(sys.executable)
    if os.sep not in python and not (os.altsep and os.altsep in python):
        import shutil  # only needed for bare names such as "python3"

        found = shutil.which(python)
        if found is None:
            raise PatchListError(f"Python interpreter not found on PATH: {python}")
        python = found
    return os.path.abspath(python)


def _gevent_fingerprint(python: str) -> str:
    """A cheap stand-in for "which gevent is installed for ``python``", without spawning.

    For the running interpreter this is the first ``gevent-*.dist-info`` (or ``.egg-info``) on
    ``sys.path``, by name and mtime: the distribution ``importlib.metadata`` would report, found
    without importing it (10 ms of every start-up) or gevent. For another interpreter it is the
    names and mtimes of any ``gevent-*.dist-info`` directories under the interpreter's prefix
    (``bin/..`` for a venv); a gevent installed elsewhere (user site, ``PYTHONPATH``) is not
    seen, so in that case only the interpreter path and mtime key the cache: delete the cache
    after upgrading gevent there.
    """
    if python == os.path.abspath(sys.executable):
        for entry in sys.path:
            try:
                names = sorted(os.listdir(entry)) if entry else []  # never the cwd's ''
            except OSError:
                continue
            found = []
            for name in names:
                if name.startswith("gevent-") and name.endswith((".dist-info", ".egg-info")):
                    try:
                        found.append(f"{name}@{os.stat(os.path.join(entry, name)).st_mtime_ns}")
                    except OSError:
                        continue
            if found:  # every one in that folder: a stale second copy is seen too
                return "dist=" + ",".join(found)
        return "dist=none"
    prefix = Path(python).parent.parent
    found = []
    for pattern in ("lib/python*/site-packages/gevent-*.dist-info", "Lib/site-packages/gevent-*"):
        for dist in prefix.glob(pattern):
            try:
                found.append(f"{dist.name}@{dist.stat().st_mtime_ns}")
            except OSError:
                continue
    return "dist=" + ",".join(sorted(found))


def _cache_key(python: str) -> str:
    """Hash of everything that changes the probe's answer and can be known without spawning.

    Covers the interpreter path and mtime, the gevent fingerprint, the ``GEVENT_*`` environment
    (``GEVENT_NOWAITPID`` and ``GEVENT_MONKEY_DISABLE_QUEUE_QUEUE`` change what is patched) and
    the probe's source files (a patchaudit upgrade invalidates old entries).
    """
    try:
        mtime = os.stat(python).st_mtime_ns
    except OSError as exc:
        raise PatchListError(f"Python interpreter not found: {python} ({exc.strerror})") from None
    digest = hashlib.sha256()
    try:
        for source in probe.source_files():
            digest.update(Path(source).read_bytes())
    except OSError as exc:
        raise PatchListError(f"patchaudit is damaged: cannot read {PROBE_SCRIPT}") from exc
    probe_digest = digest.hexdigest()
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("GEVENT_"))
    material = json.dumps([_SCHEMA, python, mtime, _gevent_fingerprint(python), env, probe_digest])
    # Keyed with this user's secret: a cache folder shipped inside a checked tree is never read.
    secret = _safeio.local_secret().encode()
    return hashlib.blake2b(material.encode(), key=secret, digest_size=12).hexdigest()


def _read_cache(path: Path) -> PatchLists | None:
    """The cached lists, or None if missing or unusable (corrupt files are just re-probed).

    Read without following a symlink and only from a regular file (the cache folder may be in
    the checked tree); the JSON is data, checked field by field by ``from_json``.
    """
    try:
        data = json.loads(_safeio.read_regular(path, 16 * 1024 * 1024))  # a few KB in practice
        if data.get("schema") != _SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}")
        return PatchLists.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        _safeio.debug(f"ignoring cache file {path}: {type(exc).__name__}: {exc}"[:300])
        return None


def _write_cache(path: Path, lists: PatchLists) -> None:
    """Write atomically (temp file + ``os.replace``) so readers never see a partial file and a
    symlink planted at ``path`` is replaced, never written through.

    A cache that cannot be written is not an error: the lists are still correct, just slower
    to get next time.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _safeio.write_atomic(path, json.dumps(lists.to_json(), sort_keys=True).encode())
    except OSError as exc:
        _safeio.debug(f"cannot write cache file {path}: {_safeio.reason(exc)}")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _run_probe(python: str, timeout: float) -> dict[str, Any]:
    """Run the probe in ``python`` and return its JSON, or raise :class:`PatchListError`.

    The probe runs supervised (:func:`patchaudit._process.capture`): its group, and anything
    gevent started in it, is killed at the end, on timeout, on an interrupt, and if this
    process dies.
    """
    import subprocess  # on use: a cached answer needs neither (5 ms of start-up)

    from . import _process

    cmd = probe.command(python, PROBE_JOB)
    try:
        returncode, out, err = _process.capture(cmd, timeout=timeout)
    except FileNotFoundError:
        raise PatchListError(f"Python interpreter not found: {python}") from None
    except PermissionError:
        raise PatchListError(f"Python interpreter is not executable: {python}") from None
    except OSError as exc:
        raise PatchListError(f"cannot run Python interpreter {python}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise PatchListError(
            f"gevent patch probe timed out after {timeout:g}s in {python}; "
            "check that importing gevent there does not hang, or raise the timeout"
        ) from None
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")

    data: Any = None
    for candidate in (stdout, _last_line(stdout)):
        try:
            data = json.loads(candidate)
            break
        except ValueError:
            continue
    if not isinstance(data, dict):
        detail = _last_line(stderr) or _last_line(stdout) or f"exit status {returncode}"
        raise PatchListError(f"gevent patch probe failed in {python}: {detail}")
    if "error" in data:
        if data.get("error_kind") == "gevent-missing":
            raise PatchListError(
                f"gevent is not installed in {python}; install it there "
                "or point patchaudit at the application's interpreter"
            )
        raise PatchListError(f"gevent patch probe failed in {python}: {data['error']}")
    if returncode != 0:
        raise PatchListError(
            f"gevent patch probe exited with status {returncode} in {python}: "
            f"{_last_line(stderr) or 'no error output'}"
        )
    return data


def patch_lists_key(python: str | None = None) -> str:
    """What :func:`load_patch_lists` keys its answer by: equal keys, equal lists. Raises
    :class:`PatchListError` like it when the interpreter cannot be found."""
    return _cache_key(_resolve_interpreter(python))


def clear_memo() -> None:
    """Forget the in-process memo (tests; long-running processes after an upgrade)."""
    with _memo_lock:
        _memo.clear()


def load_patch_lists(
    python: str | None = None,
    cache_dir: Path | None = None,
    timeout: float = 30,
) -> PatchLists:
    """Return what ``patch_all()`` replaces in ``python`` (default: this interpreter).

    The answer comes from running the installed gevent in a child process, so it is right for
    whatever gevent/Python/platform/``GEVENT_*`` environment the target has. Results are
    memoised per process and, if ``cache_dir`` is given, cached on disk keyed by
    :func:`_cache_key`. Raises :class:`PatchListError` with a one-line message on failure.
    """
    interpreter = _resolve_interpreter(python)
    key = _cache_key(interpreter)
    with _memo_lock:
        memoised = _memo.get(key)
    if memoised is not None:
        return memoised

    cache_file = None if cache_dir is None else Path(cache_dir) / f"gevent-patches-{key}.json"
    lists = _read_cache(cache_file) if cache_file is not None else None
    if lists is None:
        try:
            lists = PatchLists.from_json(_run_probe(interpreter, timeout))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PatchListError(
                f"gevent patch probe in {interpreter} returned unexpected data "
                f"({type(exc).__name__}: {exc}); is patchaudit's probe out of date?"
            ) from None
        if cache_file is not None:
            _write_cache(cache_file, lists)
    with _memo_lock:
        _memo.setdefault(key, lists)
        return _memo[key]
