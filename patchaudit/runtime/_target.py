"""Parse a TARGET the way gunicorn does, and work out how its server would load it.

Forms: ``pkg.module``, ``pkg.module:callable``, ``pkg.module:factory()`` (gunicorn's syntax),
``path/to/file.py`` and ``path/to/file.py:callable``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._gunicorn import GunicornConfig

MODES = ("auto", "as-is", "gunicorn", "gunicorn-preload", "uwsgi")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class TargetError(Exception):
    """The target cannot be used; the message is one actionable line."""


@dataclass(frozen=True)
class Target:
    spec: str  # as the user typed it
    kind: str  # "module" | "file"
    module: str  # dotted module name (for a file: its stem, or dotted from the project root)
    file: Path | None  # the file, when known without importing
    callable: str | None
    factory: bool  # `module:factory()`: call it to get the WSGI app

    def to_spec(self) -> dict:
        return {
            "kind": self.kind,
            "module": self.module,
            "file": str(self.file) if self.file else None,
            "callable": self.callable,
            "factory": self.factory,
        }


def parse_target(text: str, chdir: Path, pythonpath: list[Path]) -> Target:
    spec = text.strip()
    if not spec:
        raise TargetError("empty target: give a module (app.wsgi), module:callable or a .py file")
    location, _, attribute = spec.partition(":")
    factory = attribute.endswith("()")
    name = attribute[:-2] if factory else attribute
    if attribute and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TargetError(
            f"bad callable {attribute!r} in {spec!r}: use `module:name` or `module:factory()`"
        )
    if location.endswith(".py") or "/" in location or location.startswith("."):
        path = (chdir / location).resolve()
        if not path.is_file():
            raise TargetError(f"target file not found: {location} (looked in {chdir})")
        return Target(spec, "file", _module_for_file(path, chdir), path, name or None, factory)
    if not _DOTTED.match(location):
        raise TargetError(f"bad target {spec!r}: expected pkg.module[:callable] or path/to/file.py")
    return Target(
        spec,
        "module",
        location,
        find_module_file(location, [chdir, *pythonpath]),
        name or None,
        factory,
    )


def _module_for_file(path: Path, chdir: Path) -> str:
    try:
        parts = path.with_suffix("").relative_to(chdir).parts
    except ValueError:
        return path.stem
    if all(p.isidentifier() for p in parts):
        return ".".join(parts)
    return path.stem


def find_module_file(module: str, roots: list[Path]) -> Path | None:
    """Where the project defines ``module`` (without importing it), or None if elsewhere."""
    parts = module.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def resolve_mode(
    requested: str, target_patches: bool, gunicorn: GunicornConfig | None
) -> tuple[str, str]:
    """The load mode to use and a sentence saying why (the report shows it)."""
    if requested != "auto":
        return requested, f"--mode {requested}"
    if target_patches:
        return "as-is", "the target patches when imported, so it is imported as it is"
    if gunicorn is not None:
        # Computed by executing the config (see ._gunicorn): expressions and GUNICORN_CMD_ARGS
        # count; preload_app decides the order only for gevent's worker.
        where, worker = gunicorn.describe(), gunicorn.worker_class
        if gunicorn.gevent_worker and gunicorn.preload_app:
            return "gunicorn-preload", (
                f"{where}: gevent worker `{worker}` with preload_app on "
                "(the master imports the app, the worker patches after the fork)"
            )
        if gunicorn.gevent_worker:
            return "gunicorn", f"{where}: gevent worker `{worker}`, preload_app off"
        return "gunicorn", (
            f"{where}: worker `{worker}` is not gevent's, so preload_app is not followed; "
            "emulating gunicorn's gevent worker (patch first, then import)"
        )
    return "gunicorn", (
        "the target does not patch when imported; emulating gunicorn's gevent worker "
        "(patch first, then import)"
    )
