"""Run the runtime probe's audit job (:mod:`patchaudit.probe`) in a contained child process.

The probe imports and serves the application under audit, so it runs the app's own code: it may
hang, fork, daemonize, print megabytes or crash the interpreter. The launcher therefore

* runs it with the application's interpreter, by path (the probe's boot script loads the
  probe package under a private name; it never imports patchaudit);
* starts it with :func:`patchaudit._process.spawn`: its own session/process group under a
  supervisor that kills the whole tree if patchaudit dies (even by SIGKILL) or the deadline
  passes, and that takes the app's signals to its parent; the launcher kills the group on
  timeout (SIGTERM, a short grace, then SIGKILL) and *always* at the end, even after a clean
  exit, with everything that still carries the run's marker (forked or detached leftovers);
* sends stdout/stderr to files, never pipes, so a chatty app cannot block on a full pipe and
  a leftover child holding the write end cannot make us wait;
* reads the events file the probe appends to, tolerating a truncated last line (the probe
  may have been killed mid-write).

This module never imports gevent: importing it here would change the auditing process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _process, probe

__all__ = [
    "PROBE_SCRIPT",
    "OutputSummary",
    "ProbeError",
    "ProbeRun",
    "monitor_env",
    "parse_events",
    "run_probe",
    "summarize_output",
]

#: The probe's boot script; it is run by path with the target interpreter.
PROBE_SCRIPT = Path(probe.BOOT_SCRIPT)

#: Seconds between SIGTERM (the probe then writes where it was stuck) and SIGKILL.
TERM_GRACE = 1.5
#: Lines kept from the start and from the end of stdout/stderr.
HEAD_LINES = 10
TAIL_LINES = 20
#: Longest line kept in a summary (characters, after decoding).
MAX_LINE = 300
# How much of each end of an output file is read to find the first/last lines.
_EDGE_BYTES = 64 * 1024

_gevent_checked: dict[tuple[str, str], bool] = {}


class ProbeError(Exception):
    """The probe could not be started; ``str(exc)`` is a one-line, actionable message."""


@dataclass(frozen=True)
class OutputSummary:
    """What a stream produced: size, line count, and its first and last lines.

    ``head`` holds up to :data:`HEAD_LINES` first lines, ``tail`` up to :data:`TAIL_LINES` last
    lines that are not already in ``head`` (so short outputs are all in ``head``). Lines are
    decoded as UTF-8 with replacement and cut to :data:`MAX_LINE` characters.
    """

    bytes: int
    lines: int
    head: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "lines": self.lines, "head": self.head, "tail": self.tail}

    def text(self) -> str:
        """Head and tail as one string, with a marker where lines were left out."""
        omitted = self.lines - len(self.head) - len(self.tail)
        middle = [f"... [{omitted} lines omitted] ..."] if omitted > 0 else []
        return "\n".join([*self.head, *middle, *self.tail])


@dataclass
class ProbeRun:
    """What came back from one probe run."""

    #: The probe's events, in the order written (see :mod:`patchaudit.probe`'s docstring).
    events: list[dict[str, Any]]
    #: Exit status, or None when the probe was killed by a signal (see ``signal``).
    returncode: int | None
    #: The signal that ended the probe (SIGKILL/SIGTERM after a timeout, SIGABRT, SIGSEGV...).
    signal: int | None
    timed_out: bool
    #: Wall-clock seconds from start to the end of the process.
    duration: float
    stdout_summary: OutputSummary
    stderr_summary: OutputSummary
    #: Process id of the probe's supervisor, which is also the run's process-group id (the
    #: probe itself is the supervisor's child; its own pid is in the ``start`` event).
    pid: int | None = None
    #: Event lines that could not be parsed (a truncated last line after a kill, ...).
    bad_lines: int = 0
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    events_path: Path | None = None

    def all(self, name: str) -> list[dict[str, Any]]:
        """Every event called ``name``, in order."""
        return [e for e in self.events if e.get("event") == name]


def _resolve_interpreter(python: str) -> str:
    """Absolute path of the interpreter *without* resolving symlinks (a venv's python is one)."""
    if os.sep not in python and not (os.altsep and os.altsep in python):
        found = shutil.which(python)
        if found is None:
            raise ProbeError(f"Python interpreter not found on PATH: {python}")
        python = found
    path = os.path.abspath(python)
    if not os.path.exists(path):
        raise ProbeError(f"Python interpreter not found: {path}")
    if not os.access(path, os.X_OK):
        raise ProbeError(f"Python interpreter is not executable: {path}")
    return path


def _check_gevent(python: str, env: Mapping[str, str], cwd: str) -> None:
    """Raise ProbeError unless ``import gevent`` can work in ``python`` (gevent not imported)."""
    key = (python, env.get("PYTHONPATH", ""))
    if _gevent_checked.get(key):
        return
    code = (
        "import importlib.util, sys; "
        "sys.exit(3 if importlib.util.find_spec('gevent') is None else 0)"
    )
    try:
        # capture, not subprocess.run: an interrupt's kill_all() must reach this child too.
        returncode, _out, stderr = _process.capture(
            [python, "-c", code], env=env, cwd=cwd, timeout=60
        )
    except OSError as exc:
        raise ProbeError(f"cannot run Python interpreter {python}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{python} did not start within 60s; check the interpreter") from None
    if returncode == 3:
        raise ProbeError(f"gevent is not installed in {python}; install it there")
    if returncode != 0:
        detail = _last_line(stderr) or f"exit status {returncode}"
        raise ProbeError(f"Python interpreter {python} does not work: {detail}")
    _gevent_checked[key] = True


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:MAX_LINE] if lines else ""


def _clip(line: bytes) -> str:
    text = line.decode("utf-8", "replace").rstrip("\r")
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def summarize_output(path: Path) -> OutputSummary:
    """Size, line count and first/last lines of a (possibly huge) output file."""
    try:
        size = path.stat().st_size
    except OSError:
        return OutputSummary(bytes=0, lines=0)
    if size == 0:
        return OutputSummary(bytes=0, lines=0)
    newlines = 0
    last_byte = b""
    with path.open("rb") as fh:
        head_data = fh.read(_EDGE_BYTES)
        fh.seek(0)
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            newlines += chunk.count(b"\n")
            last_byte = chunk[-1:]
        fh.seek(max(0, size - _EDGE_BYTES))
        tail_data = fh.read()
    lines = newlines + (0 if last_byte == b"\n" else 1)

    head_lines = head_data.split(b"\n")
    if len(head_data) == size and head_data.endswith(b"\n"):
        head_lines.pop()  # the empty string after the final newline is not a line
    head = [_clip(x) for x in head_lines[:HEAD_LINES]]
    head = head[:lines]

    remaining = lines - len(head)
    tail: list[str] = []
    if remaining > 0:
        tail_lines = tail_data.split(b"\n")
        if tail_data.endswith(b"\n"):
            tail_lines.pop()
        if size > _EDGE_BYTES:
            tail_lines = tail_lines[1:]  # the first piece may be a partial line
        tail = [_clip(x) for x in tail_lines[-min(TAIL_LINES, remaining) :]]
    return OutputSummary(bytes=size, lines=lines, head=head, tail=tail)


def parse_events(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """(events, unparsable line count) from JSON Lines; a cut-off last line is just skipped."""
    events: list[dict[str, Any]] = []
    bad = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            bad += 1
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
        else:
            bad += 1
    return events, bad


def monitor_env(max_blocking: float) -> dict[str, str]:
    """What every audited process gets: gevent's monitor thread on, with the block threshold,
    reporting through events rather than printing."""
    return {
        "GEVENT_MONITOR_THREAD_ENABLE": "1",
        "GEVENT_MAX_BLOCKING_TIME": str(max_blocking),
        "GEVENT_MONITOR_PRINT_BLOCKING_REPORTS": "0",
    }


def _child_env(spec: Mapping[str, Any], env: Mapping[str, str] | None) -> dict[str, str]:
    child = dict(os.environ if env is None else env)
    serve = spec.get("serve") or {}
    child.update(monitor_env(serve.get("max_blocking", 0.1)))
    # The audit must not leave __pycache__ directories in the user's project.
    child.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    entries = [str(p) for p in spec.get("pythonpath") or []]
    if spec.get("chdir"):
        entries.append(str(spec["chdir"]))  # gunicorn puts the working directory on sys.path
    if child.get("PYTHONPATH"):
        entries.append(child["PYTHONPATH"])
    if entries:
        child["PYTHONPATH"] = os.pathsep.join(entries)
    return child


def run_probe(
    spec: dict[str, Any],
    *,
    python: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
    workdir: Path,
) -> ProbeRun:
    """Run the probe for ``spec`` (see :mod:`patchaudit.probe`) and collect what it reported.

    Each run gets its own ``workdir/probe-XXXX/`` holding ``spec.json``, ``stdout.txt``,
    ``stderr.txt`` and, unless the spec names an ``events_path`` (replaced if present),
    ``events.jsonl``; so several runs may share one ``workdir`` concurrently. ``env`` is the base
    environment (default: this process's); the launcher adds ``GEVENT_MONITOR_*`` settings and
    ``PYTHONPATH`` = spec ``pythonpath`` + ``chdir`` + the base ``PYTHONPATH``.

    Raises :class:`ProbeError` only when the probe cannot be started (interpreter or gevent
    missing, bad working directory); anything the app does is reported in the :class:`ProbeRun`.
    """
    interpreter = _resolve_interpreter(python)
    chdir = str(spec.get("chdir") or os.getcwd())
    if not os.path.isdir(chdir):
        raise ProbeError(f"working directory for the audit does not exist: {chdir}")

    try:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        rundir = Path(tempfile.mkdtemp(prefix="probe-", dir=workdir))
    except OSError as exc:
        raise ProbeError(f"cannot create probe work directory in {workdir}: {exc}") from None
    spec = dict(spec)
    spec["chdir"] = chdir
    events_path = Path(spec.get("events_path") or rundir / "events.jsonl")
    spec["events_path"] = str(events_path)
    child_env = _child_env(spec, env)
    _check_gevent(interpreter, child_env, chdir)

    spec_file = rundir / "spec.json"
    stdout_path = rundir / "stdout.txt"
    stderr_path = rundir / "stderr.txt"
    try:
        events_path.unlink(missing_ok=True)
        spec_file.write_text(json.dumps(spec, indent=2, sort_keys=True), encoding="utf-8")
    except OSError as exc:
        raise ProbeError(f"cannot write probe files in {workdir}: {exc.strerror}") from None

    timed_out = False
    start = time.monotonic()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        try:
            child = _process.spawn(
                probe.command(interpreter, "--spec-file", str(spec_file)),
                cwd=chdir,
                env=child_env,
                stdout=out,
                stderr=err,
                deadline=timeout + TERM_GRACE,
            )
        except OSError as exc:
            raise ProbeError(f"cannot run Python interpreter {interpreter}: {exc}") from None
    try:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            # SIGTERM first: the probe writes a ``terminated`` event with the stuck stack (its
            # supervisor ignores it and mirrors how the probe ended). Not just the group: an app
            # that called os.setsid() in the probe itself has left it.
            child.signal_all(signal.SIGTERM)
            try:
                child.wait(timeout=TERM_GRACE)
            except subprocess.TimeoutExpired:
                pass
    finally:
        # Always, also after a clean exit or an interrupt's kill_all(): the app may have forked
        # or detached children that outlive the probe.
        child.kill()
    duration = time.monotonic() - start

    try:
        data = events_path.read_bytes()
    except OSError:
        data = b""
    events, bad = parse_events(data)
    rc = child.returncode
    return ProbeRun(
        events=events,
        returncode=rc if rc is not None and rc >= 0 else None,
        signal=-rc if rc is not None and rc < 0 else None,
        timed_out=timed_out,
        duration=duration,
        stdout_summary=summarize_output(stdout_path),
        stderr_summary=summarize_output(stderr_path),
        pid=child.pid,
        bad_lines=bad,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        events_path=events_path,
    )
