"""``check --show-settings``: the resolved configuration, as TOML that reads back the same.

The text is a ``[tool.patchaudit]`` table with every key at its resolved value (``select`` as
the codes it enables), so ``--config`` on a copy of it gives the same settings; the root and the
file they came from are comments. ``--format json`` gives the same data as one object.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from .._config import Config


def settings(config: Config) -> dict[str, Any]:
    """The configuration in its own keys and file syntax (``fail-on = "never"`` for None)."""
    return {
        "select": sorted(config.select),
        "per-file-ignores": {glob: sorted(codes) for glob, codes in config.per_file_ignores},
        "exclude": list(config.exclude),
        "fail-on": config.fail_on.value if config.fail_on is not None else "never",
        "entry-points": list(config.entry_points),
        "framework": config.framework,
        "respect-gitignore": config.respect_gitignore,
        "max-file-size": config.max_file_size,
    }


def show_settings(config: Config, cwd: Path, *, as_json: bool) -> None:
    source = _shown(config.source, cwd) if config.source is not None else None
    if as_json:
        from ..reporters._json import dumps

        document = {"root": str(config.root), "config_file": source, "settings": settings(config)}
        sys.stdout.write(dumps(document))
        return
    lines = [
        f"# root (globs, excludes and module names are relative to it): {config.root}",
        f"# read from: {source or 'no configuration file (defaults)'}",
        "[tool.patchaudit]",
    ]
    lines += [f"{key} = {_toml(value)}" for key, value in settings(config).items()]
    sys.stdout.write("\n".join(lines) + "\n")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        items = ", ".join(_toml(v) for v in value)
        if len(items) <= 80:
            return f"[{items}]"
        body = textwrap.fill(items, 96, initial_indent="    ", subsequent_indent="    ")
        return f"[\n{body},\n]"
    return json.dumps(value)  # a JSON string or number is a TOML one


def _shown(path: Path, cwd: Path) -> str:
    try:
        return path.relative_to(cwd).as_posix()
    except ValueError:
        return str(path)
