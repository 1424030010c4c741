"""Project configuration: the ``[tool.patchaudit]`` table of ``pyproject.toml``.

The file is found like ruff finds its own: walk up from the first path being checked (or the
working directory) to the nearest ``pyproject.toml`` that has a ``[tool.patchaudit]`` table.
Command-line values arrive as ``overrides`` using the same key names and are layered on top.
Every problem is reported as a :class:`ConfigError` whose message is one actionable line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._findings import Severity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_FAIL_ON",
    "DEFAULT_MAX_FILE_SIZE",
    "FRAMEWORKS",
    "Config",
    "ConfigError",
    "load_config",
]

FRAMEWORKS = ("auto", "gevent", "eventlet")
# Fail on warnings and errors but not on informational findings (mypy-style: notes never fail).
DEFAULT_FAIL_ON: Severity | None = Severity.WARNING
_FAIL_ON_VALUES = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO}
# Bigger files are not read (MPA003): parsing a generated 20 MB module takes about a minute and
# over 4 GB of memory, and real source files are far smaller.
DEFAULT_MAX_FILE_SIZE = 4 * 1024 * 1024
_SIZE_RE = re.compile(r"\s*(\d+)\s*(|b|kb|kib|mb|mib|gb|gib)\s*", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_SIZE_UNITS.update({"kib": 1024, "mib": 1024**2, "gib": 1024**3})
_LIST_KEYS = ("select", "extend-select", "ignore", "exclude", "extend-exclude", "entry-points")
_KEYS = (
    *_LIST_KEYS,
    "per-file-ignores",
    "fail-on",
    "framework",
    "respect-gitignore",
    "max-file-size",
)
_SELECTOR_RE = re.compile(r"[A-Z]{1,3}[0-9]{0,3}")
_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
_TYPE_NAMES = {dict: "table", list: "list", str: "str", int: "int", float: "float", bool: "bool"}


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` is one line naming the file/option and the fix."""


class _PathGlob:
    """One per-file-ignores glob (gitignore syntax, relative to root; ``!glob`` inverts it)."""

    def __init__(self, glob: str) -> None:
        import pathspec  # on use: 10 ms of start-up a config without these does not pay

        self.negated = glob.startswith("!")
        self.spec = pathspec.GitIgnoreSpec.from_lines([glob[1:] if self.negated else glob])

    def matches(self, relpath: str) -> bool:
        return self.spec.match_file(relpath) != self.negated


@dataclass(frozen=True)
class Config:
    # folder of the pyproject.toml; without one, the checked folder (or cwd when it contains the
    # checked paths): globs, excludes and module names are relative to it
    root: Path
    source: Path | None  # the pyproject.toml used
    select: frozenset[str]  # resolved set of enabled codes
    per_file_ignores: tuple[tuple[str, frozenset[str]], ...] = ()
    exclude: tuple[str, ...] = ()  # gitignore-style patterns relative to root
    fail_on: Severity | None = DEFAULT_FAIL_ON  # None means "never fail"
    entry_points: tuple[str, ...] = ()  # module names ("app.wsgi") or paths/globs ("scripts/*.py")
    framework: str = "auto"  # "auto" | "gevent" | "eventlet"
    respect_gitignore: bool = True
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes; bigger files are not read
    _globs: tuple[tuple[_PathGlob, frozenset[str]], ...] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        # Compile once: codes_for runs for every file of the project.
        globs = tuple((_PathGlob(g), codes) for g, codes in self.per_file_ignores)
        object.__setattr__(self, "_globs", globs)

    def codes_for(self, relpath: str) -> frozenset[str]:
        """Enabled codes for a file (``relpath`` relative to :attr:`root`, forward slashes)."""
        relpath = relpath.replace("\\", "/").removeprefix("./")
        codes = self.select
        for glob, ignored in self._globs:
            if ignored & codes and glob.matches(relpath):
                codes = codes - ignored
        return codes

    def fingerprint(self) -> str:
        """A stable hash of every setting that can change results (a cache key)."""
        data = {
            "root": str(self.root),
            "select": sorted(self.select),
            "per_file_ignores": [[g, sorted(c)] for g, c in self.per_file_ignores],
            "exclude": list(self.exclude),
            "fail_on": self.fail_on.value if self.fail_on else None,
            "entry_points": list(self.entry_points),
            "framework": self.framework,
            "respect_gitignore": self.respect_gitignore,
            "max_file_size": self.max_file_size,
        }
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def load_config(
    paths: Sequence[Path],
    known_codes: Collection[str],
    overrides: Mapping[str, object] | None = None,
    config_file: Path | None = None,
) -> Config:
    """Find, read, validate and resolve the configuration; raise :class:`ConfigError` on problems.

    Rule selection is layered like ruff: the file's ``select`` (default ``ALL``), then its
    ``extend-select``, then its ``ignore``; then the same three from ``overrides``, where an
    override ``select`` starts again from scratch. Override ``exclude``, ``fail-on``,
    ``entry-points``, ``framework`` and ``respect-gitignore`` replace the file's values;
    ``extend-exclude`` and ``per-file-ignores`` add to them.
    """
    cwd = Path.cwd()
    if config_file is not None:
        chosen = _absolute(config_file, cwd)
        if not chosen.is_file():
            raise ConfigError(f"config file not found: {config_file}")
        table, where = _read_table(chosen, cwd)
        source: Path | None = chosen
    else:
        start = _absolute(paths[0], cwd) if paths else cwd
        source, table = _find_pyproject(start, cwd)
        where = f"{_display(source, cwd)}: [tool.patchaudit]" if source else ""
    root = source.parent if source else _implicit_root(paths, cwd)
    known = frozenset(known_codes)

    file_opts = _validate(table, where, known)
    cli_opts = _validate(_normalize_overrides(overrides or {}), "command line:", known)

    enabled = frozenset(known)
    for opts in (file_opts, cli_opts):
        if "select" in opts:
            enabled = opts["select"]
        added, removed = opts.get("extend-select", frozenset()), opts.get("ignore", frozenset())
        enabled = (enabled | added) - removed

    def pick(key: str, default: Any) -> Any:
        return cli_opts.get(key, file_opts.get(key, default))

    return Config(
        root=root,
        source=source,
        select=enabled,
        per_file_ignores=tuple(
            file_opts.get("per-file-ignores", ()) + cli_opts.get("per-file-ignores", ())
        ),
        exclude=tuple(
            pick("exclude", ())
            + file_opts.get("extend-exclude", ())
            + cli_opts.get("extend-exclude", ())
        ),
        fail_on=pick("fail-on", DEFAULT_FAIL_ON),
        entry_points=tuple(pick("entry-points", ())),
        framework=pick("framework", "auto"),
        respect_gitignore=pick("respect-gitignore", True),
        max_file_size=pick("max-file-size", DEFAULT_MAX_FILE_SIZE),
    )


def _implicit_root(paths: Sequence[Path], cwd: Path) -> Path:
    """Without a pyproject.toml: cwd when the paths are inside it, else the first path's folder,
    so `patchaudit check /elsewhere --exclude x` matches `x` inside /elsewhere."""
    if not paths:
        return cwd
    first = _absolute(paths[0], cwd)
    if first == cwd or cwd in first.parents:
        return cwd
    return first if first.is_dir() else first.parent


def _absolute(path: Path, cwd: Path) -> Path:
    # normpath, not resolve(): keep the user's (possibly symlinked) spelling like discovery does.
    return Path(os.path.normpath(cwd / path))


def _display(path: Path, cwd: Path) -> str:
    try:
        return path.relative_to(cwd).as_posix()
    except ValueError:
        return str(path)


def _find_pyproject(start: Path, cwd: Path) -> tuple[Path | None, Mapping[str, Any]]:
    folder = start if start.is_dir() else start.parent
    for candidate_dir in (folder, *folder.parents):
        candidate = candidate_dir / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            raw = candidate.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {_display(candidate, cwd)}: {_reason(exc)}") from None
        if b"patchaudit" not in raw:  # cheap pre-check: don't parse (or choke on) unrelated files
            continue
        data = _parse(raw, candidate, cwd)
        tool = data.get("tool")
        if isinstance(tool, dict) and "patchaudit" in tool:
            table = tool["patchaudit"]
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{_display(candidate, cwd)}: [tool.patchaudit] must be a table, "
                    f"got {_type_name(table)}"
                )
            return candidate, table
    return None, {}


def _read_table(source: Path, cwd: Path) -> tuple[Mapping[str, Any], str]:
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {_display(source, cwd)}: {_reason(exc)}") from None
    data = _parse(raw, source, cwd)
    shown = _display(source, cwd)
    tool = data.get("tool")
    if isinstance(tool, dict) and "patchaudit" in tool:
        table = tool["patchaudit"]
        if not isinstance(table, dict):
            raise ConfigError(f"{shown}: [tool.patchaudit] must be a table")
        return table, f"{shown}: [tool.patchaudit]"
    if source.name == "pyproject.toml":
        return {}, f"{shown}: [tool.patchaudit]"
    # A dedicated file (e.g. patchaudit.toml) holds the keys at top level, like ruff.toml.
    return data, f"{shown}:"


def _parse(raw: bytes, source: Path, cwd: Path) -> dict[str, Any]:
    shown = _display(source, cwd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not valid UTF-8; save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        pos = _TOML_POS_RE.search(msg)
        if pos:
            where = f"{pos.group(1)}:{pos.group(2)}"
        elif "end of document" in msg:  # e.g. an unclosed list: point at the last line
            pos = re.search(r"\s*\(at end of document\)", msg)
            where = f"{max(1, len(text.splitlines()))}"
        else:
            where = ""
        if pos:
            msg = msg[: pos.start()].rstrip()
        location = f"{shown}:{where}" if where else shown
        raise ConfigError(f"{location}: invalid TOML: {msg}") from None


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _normalize_overrides(overrides: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in overrides.items():
        if value is None:  # an option that was not given on the command line
            continue
        key = key.replace("_", "-")
        # Be lenient with comma-separated strings for list options ("--select MPA1,MPA2").
        if key in _LIST_KEYS and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        elif key in _LIST_KEYS and isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def _validate(table: Mapping[str, Any], where: str, known: frozenset[str]) -> dict[str, Any]:
    """Check keys and types; return the values in resolved form (codes as frozensets)."""
    prefix = f"{where} " if where else ""
    opts: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _KEYS:
            close = difflib.get_close_matches(key.replace("_", "-"), _KEYS, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)" if close else f"; valid keys: {', '.join(_KEYS)}"
            )
            raise ConfigError(f"{prefix}unknown key '{key}'{hint}")
        if key in _LIST_KEYS:
            items = _str_list(value, key, prefix)
            if key in ("select", "extend-select", "ignore"):
                opts[key] = _resolve(items, key, prefix, known)
            elif key in ("exclude", "extend-exclude"):
                for pattern in items:
                    _check_glob(pattern, key, prefix)
                opts[key] = tuple(items)
            else:
                opts[key] = tuple(items)
        elif key == "per-file-ignores":
            opts[key] = _per_file_ignores(value, prefix, known)
        elif key == "fail-on":
            choice = _choice(value, key, prefix, (*_FAIL_ON_VALUES, "never"))
            opts[key] = _FAIL_ON_VALUES.get(choice)  # "never" -> None
        elif key == "framework":
            opts[key] = _choice(value, key, prefix, FRAMEWORKS)
        elif key == "respect-gitignore":
            if not isinstance(value, bool):
                raise ConfigError(f"{prefix}'{key}' must be true or false, got {_type_name(value)}")
            opts[key] = value
        elif key == "max-file-size":
            opts[key] = _file_size(value, key, prefix)
    return opts


def _file_size(value: object, key: str, prefix: str) -> int:
    """A positive number of bytes: an integer, or a string such as "4MiB" or "500 kB"."""
    match = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif match:
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    else:
        shown = repr(value) if isinstance(value, str) else _type_name(value)
        raise ConfigError(
            f"{prefix}'{key}' must be a number of bytes such as 4194304 or \"4MiB\", got {shown}"
        )
    if size < 1:
        raise ConfigError(f"{prefix}'{key}' must be at least 1 byte, got {value!r}")
    return size


def _str_list(value: object, key: str, prefix: str) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(f"{prefix}'{key}' must be a list of strings, got {_type_name(value)}")
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(
                f"{prefix}'{key}' must be a list of strings, got a list containing "
                f"{_type_name(item)} {item!r}"
            )
        if not item.strip():
            raise ConfigError(f"{prefix}'{key}' contains an empty string; remove it")
    return [item.strip() for item in value]


def _choice(value: object, key: str, prefix: str, allowed: Sequence[str]) -> str:
    options = ", ".join(f"'{a}'" for a in allowed)
    if not isinstance(value, str):
        raise ConfigError(f"{prefix}'{key}' must be one of {options}, got {_type_name(value)}")
    if value.lower() not in allowed:
        raise ConfigError(f"{prefix}'{key}' must be one of {options}, got '{value}'")
    return value.lower()


def _check_glob(pattern: str, key: str, prefix: str) -> None:
    import pathspec

    try:
        pathspec.GitIgnoreSpec.from_lines([pattern.removeprefix("!")])
    except Exception as exc:  # pathspec raises several types for malformed patterns
        raise ConfigError(f"{prefix}invalid pattern '{pattern}' in '{key}': {exc}") from None


def _resolve(selectors: Sequence[str], key: str, prefix: str, known: frozenset[str]) -> frozenset:
    """Expand ruff-style selectors ("ALL", "MPA", "MPA1", "MPA101") to known codes."""
    codes: set[str] = set()
    for raw in selectors:
        selector = raw.upper()
        if selector == "ALL":
            codes |= known
            continue
        matched = (
            {c for c in known if c.startswith(selector)}
            if _SELECTOR_RE.fullmatch(selector)
            else set()
        )
        if not matched:
            close = difflib.get_close_matches(selector, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{prefix}unknown rule code or prefix '{raw}' in '{key}'{hint}")
        codes |= matched
    return frozenset(codes)


def _per_file_ignores(
    value: object, prefix: str, known: frozenset[str]
) -> tuple[tuple[str, frozenset[str]], ...]:
    key = "per-file-ignores"
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{prefix}'{key}' must be a table of glob = [codes], got {_type_name(value)}"
        )
    out = []
    for glob, codes in value.items():
        if not isinstance(glob, str) or not glob.strip():
            raise ConfigError(f"{prefix}'{key}' has an empty glob; remove it")
        entry = f'{key}."{glob}"'
        _check_glob(glob, key, prefix)
        out.append((glob.strip(), _resolve(_str_list(codes, entry, prefix), key, prefix, known)))
    return tuple(out)
