"""gunicorn's settings as gunicorn computes them, from the probe's ``--gunicorn-config`` job.

The config file is Python: ``preload_app = os.environ.get("PRELOAD") == "1"`` is only known by
running it, and ``GUNICORN_CMD_ARGS`` may override it. patchaudit never runs the user's code in
its own process, so the file is executed in a throw-away child with the app's interpreter
(:mod:`patchaudit.probe._gunicorn_config`), which answers with one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _process, probe
from ._target import TargetError


@dataclass(frozen=True)
class GunicornConfig:
    """The settings that decide how the audit loads the app, and what the hooks see."""

    path: Path | None  # the file executed; None when GUNICORN_CMD_ARGS alone configures
    worker_class: str
    gevent_worker: bool  # gevent's worker class, or a subclass of it
    preload_app: bool
    bind: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()  # server hooks the file defines
    env_args: tuple[str, ...] = ()  # GUNICORN_CMD_ARGS, split
    gunicorn: str | None = None  # the version whose Config did the work; None: the fallback
    #: Modules gunicorn itself loads in its master (so before the patch): its command's, and
    #: the worker class's
    master_modules: tuple[str, ...] = ()
    #: ``{"module", "qualname"}`` of a gevent worker subclass with its own ``patch()``
    worker_patch: Mapping[str, str] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GunicornConfig:
        return cls(
            path=Path(data["config"]) if data.get("config") else None,
            worker_class=str(data["worker_class"]),
            gevent_worker=bool(data["gevent_worker"]),
            preload_app=bool(data["preload_app"]),
            bind=tuple(data.get("bind") or ()),
            hooks=tuple(data.get("hooks") or ()),
            env_args=tuple(data.get("env_args") or ()),
            gunicorn=data.get("gunicorn"),
            master_modules=tuple(data.get("master_modules") or ()),
            worker_patch=data.get("worker_patch"),
            settings=dict(data.get("settings") or {}),
        )

    def describe(self) -> str:
        """How the settings were computed, for the timeline's mode reason."""
        where = self.path.name if self.path else "the defaults"
        how = f"gunicorn {self.gunicorn}'s Config" if self.gunicorn else "a gunicorn-like reader"
        env = " and GUNICORN_CMD_ARGS" if self.env_args else ""
        bind = f" (bind {', '.join(self.bind)})" if self.bind else ""
        return f"{where}{env}, executed with {how}{bind}"

    def to_spec(self) -> dict[str, Any]:
        return {
            "config": str(self.path) if self.path else None,
            "settings": dict(self.settings),
            "worker_patch": dict(self.worker_patch) if self.worker_patch else None,
        }


def load_gunicorn_config(
    path: Path | None,
    *,
    python: str,
    chdir: Path,
    env: Mapping[str, str],
    pythonpath: list[Path] | None = None,
    timeout: float = 60.0,
) -> GunicornConfig | None:
    """Execute the config at ``path`` (None: the one gunicorn would pick) in a child process.

    None when there is nothing to read (no file and no ``GUNICORN_CMD_ARGS``). ``timeout``
    bounds the child, whose whole process tree is killed at the end. Raises
    :class:`TargetError` with one line when the file raises or sets an invalid value, as
    gunicorn itself would refuse to start.
    """
    if path is None and not (chdir / "gunicorn.conf.py").is_file():
        if not env.get("GUNICORN_CMD_ARGS", "").strip():
            return None
    cmd = probe.command(python, "--gunicorn-config", str(path) if path else "")
    if pythonpath:  # where the audit finds the app, the config finds its modules too
        env = dict(env)
        entries = [str(p) for p in pythonpath] + [e for e in [env.get("PYTHONPATH")] if e]
        env["PYTHONPATH"] = os.pathsep.join(entries)
    try:
        returncode, out, _ = _process.capture(
            cmd, env=env, cwd=chdir, stderr=False, timeout=timeout
        )
    except OSError as exc:
        raise TargetError(f"cannot run Python interpreter {python}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise TargetError(
            f"the gunicorn config did not finish within the timeout ({timeout:g}s): "
            "does it wait for something when it is executed?"
        ) from None
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TargetError(
            f"cannot read the gunicorn config: its job exited with status "
            f"{returncode} and no answer"
        )
    if "error" in data:
        executed = data.get("config")
        shown = _shown(Path(executed) if executed else path or chdir / "gunicorn.conf.py", chdir)
        at = ""
        if data.get("file") and data.get("line"):
            at = f" at {_shown(Path(data['file']), chdir)}:{data['line']}"
        raise TargetError(f"gunicorn config {shown} failed: {data['error']}{at}")
    try:
        return GunicornConfig.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise TargetError(f"unexpected answer from the gunicorn config job: {exc}") from None


def _shown(path: Path, chdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(chdir))
    except ValueError:
        return str(path)
