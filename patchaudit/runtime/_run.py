"""`patchaudit run -- COMMAND`: the user's real launcher, with every Python process recorded.

Where `patchaudit TARGET` emulates a server, this runs the real one (gunicorn, celery, locust,
uWSGI, ``python -m gevent.monkey``, a script). The probe's recorder goes into every interpreter
the command starts through a ``sitecustomize`` first on ``PYTHONPATH`` (``probe/_site``, which
chains to the one it hides), and gevent's own patch calls mark the moment the state is read
(see ``probe/_run_job.py``). The command runs under a supervisor in its own process group
(:func:`patchaudit._exec.exec_command`); when it listens on 127.0.0.1 the same requests as the
emulated modes' are sent there; then it is stopped (SIGINT to the command, a grace, then
SIGKILL to everything it started), or it ends by itself, or ``--duration`` passes.

Each process's events become one timeline (a forked process starts with its parent's, up to the
fork), judged by the same probe rules; findings carry the process (pid) they were seen in, and
the report lists the processes with their role: ``main`` or ``master``, ``worker N`` (forked
by it), ``child`` (anything else).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _process, _scratch, probe
from .._config import Config
from .._exec import exec_command
from .._findings import Finding, Report
from .._gevent_patches import PatchListError, load_patch_lists
from ..judge import merge, recount_unused_noqa
from ..model.facts import Facts, RuntimeContext
from ..static import analyze
from ._audit import AuditResult, _judge_runtime
from ._drive import DriveSettings, answers_http, drive
from ._launcher import OutputSummary, ProbeRun, monitor_env, parse_events, summarize_output
from ._listeners import listening_ports
from ._outcome import _raised_at, build_timeline, record_request_failures
from ._target import Target, TargetError

__all__ = ["RunOptions", "run_command"]

#: Seconds the command gets to end after Ctrl-C before everything it started is killed, and
#: after which its whole group gets SIGTERM too.
STOP_GRACE = 5.0
TERM_AFTER = 1.0
#: Seconds the processes get after the requests, so what they saw is written before the stop.
SETTLE = 0.3
_POLL = 0.1
SITE_DIR = Path(probe.BOOT_SCRIPT).with_name("_site")


@dataclass
class RunOptions:
    command: list[str]
    chdir: Path = field(default_factory=Path.cwd)
    duration: float = 60.0
    drive: DriveSettings | None = field(default_factory=DriveSettings)  # None: no requests
    port: int | None = None
    max_blocking: float = 0.1
    static: bool = True


@dataclass
class _Process:
    pid: int
    ppid: int
    argv: list[str]
    forked_from: int | None
    inherited: int
    wall: float
    own: bytes
    events: list[dict[str, Any]] = field(default_factory=list)
    role: str = "child"


@dataclass
class _Ran:
    returncode: int | None = None
    signal: int | None = None
    stopped: bool = False  # still running at the end: patchaudit stopped it
    duration: float = 0.0
    serve: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_command(
    options: RunOptions,
    config: Config,
    *,
    cwd: Path,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> AuditResult:
    """Run the command, audit its processes, stop it. ``progress`` gets a short line whenever
    the stage changes (for a status line on a terminal). Inside
    :func:`patchaudit._process.interruptible`, SIGINT/SIGTERM stop it with a partial report."""
    say = progress or (lambda text: None)
    chdir = options.chdir.resolve()
    argv = [_resolve_program(options.command, chdir), *options.command[1:]]
    static_report = project = None
    interrupted = None
    ran = _Ran()
    with _scratch.scratch_dir("run") as workdir:
        try:
            if options.static:
                say("checking the project folder")
                static_report, project = analyze([chdir], config, cwd=cwd, use_cache=use_cache)
            _run(argv, chdir, options, workdir, ran, say)
        except BaseException as exc:
            interrupted = _process.interruption(exc)
            _process.kill_all()
            if interrupted is None:
                raise
        say("reading what each process recorded")
        processes = _processes(workdir)
        output = (
            summarize_output(workdir / "stdout.txt"),
            summarize_output(workdir / "stderr.txt"),
        )
    report = _report(options, config, cwd, chdir, argv, ran, processes, output, project)
    if static_report is not None:
        report.errors[:0] = static_report.errors
        report.files_seen, report.files_analyzed = (
            static_report.files_seen,
            static_report.files_analyzed,
        )
        report.findings = merge(static_report.findings, report.findings)
        report.findings.sort(key=lambda f: f.sort_key)
    if interrupted is not None:
        report.interrupted = f"{interrupted}: results are partial"
    failed = bool(report.errors) and interrupted is None
    return AuditResult(report=report, target_failed=failed, interrupted=interrupted)


def _resolve_program(command: list[str], chdir: Path) -> str:
    if not command:
        raise TargetError(
            "no command: give it after `--`, e.g. `patchaudit run -- gunicorn app:app`"
        )
    program = command[0]
    if os.sep in program:
        path = os.path.abspath(chdir / program)  # not resolved: a venv's python is a symlink
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise TargetError(f"command not found or not executable: {program}")
        return path
    found = shutil.which(program)
    if found is None:
        raise TargetError(f"command not found on PATH: {program}")
    return found


def _environment(chdir: Path, workdir: Path, max_blocking: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(monitor_env(max_blocking))
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")  # no __pycache__ left in the user's project
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), env.get("PYTHONPATH")) if p)
    env["PATCHAUDIT_RUN_DIR"] = str(workdir)
    env["PATCHAUDIT_RUN_ROOTS"] = str(chdir)
    env["PATCHAUDIT_RUN_PROBE"] = probe.BOOT_SCRIPT
    return env


def _run(
    argv: list[str],
    chdir: Path,
    options: RunOptions,
    workdir: Path,
    ran: _Ran,
    say: Callable[[str], None],
) -> None:
    env = _environment(chdir, workdir, options.max_blocking)
    started = time.monotonic()
    deadline = started + options.duration
    with (workdir / "stdout.txt").open("wb") as out, (workdir / "stderr.txt").open("wb") as err:
        try:
            child = _process.spawn(
                exec_command(argv),
                env=env,
                cwd=chdir,
                stdout=out,
                stderr=err,
                deadline=options.duration + 2 * STOP_GRACE,
            )
        except OSError as exc:
            raise TargetError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    name = os.path.basename(argv[0])
    try:
        tried: set[int] = set()
        while child.poll() is None and time.monotonic() < deadline:
            waited = time.monotonic() - started
            say(f"running {name} ({waited:.0f}s of at most {options.duration:g}s)")
            if options.drive is not None and not ran.serve:
                ran.serve = _serve(child, options, tried, say)
                if ran.serve:
                    time.sleep(SETTLE)
                    break
            time.sleep(_POLL)
        ran.stopped = child.poll() is None
        if ran.stopped:
            say(f"stopping {name}")
            _stop(child)
        if options.drive is not None and not ran.serve:
            ran.notes.append(
                "requests were not probed: the command did not listen on 127.0.0.1 "
                + ("before it ended" if not ran.stopped else f"within {options.duration:g}s")
            )
    finally:
        child.kill()
    ran.duration = time.monotonic() - started
    rc = child.returncode
    ran.returncode = rc if rc is not None and rc >= 0 else None
    ran.signal = -rc if rc is not None and rc < 0 else None


def _serve(
    child: _process.Child, options: RunOptions, tried: set[int], say: Callable[[str], None]
) -> list[dict[str, Any]]:
    settings = options.drive or DriveSettings()
    pids = set(_process.group_parents(child.pid)) - {child.pid}
    ports = listening_ports(pids)
    for port in sorted(ports) if options.port is None else [options.port]:
        if port not in ports or port in tried:
            continue
        tried.add(port)
        say(f"sending requests to 127.0.0.1:{port}")
        if answers_http(port, settings.paths[0], settings.request_timeout):
            return drive(port, settings)
    return []


def _stop(child: _process.Child) -> None:
    """Ctrl-C to the command, the one signal every launcher takes as "stop" (SIGTERM makes
    uWSGI reload); then SIGTERM to its group; then :meth:`Child.kill` does the rest."""
    programs = [p for p, parent in _process.group_parents(child.pid).items() if parent == child.pid]
    for pid in programs:
        try:
            os.kill(pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pass
    end = time.monotonic() + STOP_GRACE
    termed = False
    while time.monotonic() < end and set(_process.group_parents(child.pid)) - {child.pid}:
        if not termed and time.monotonic() > end - STOP_GRACE + TERM_AFTER:
            # celery's gevent pool sits out Ctrl-C; and a worker its master did not stop
            child.signal_group(signal.SIGTERM)
            termed = True
        time.sleep(0.05)


def _processes(workdir: Path) -> list[_Process]:
    """Every recorded interpreter, each with its whole timeline, in start order."""
    found: dict[int, _Process] = {}
    for path in workdir.glob("events-*.jsonl"):
        data = path.read_bytes()
        events, _bad = parse_events(data)
        mine = [e for e in events if e.get("event") == "process"]
        if not mine:
            continue
        me = mine[-1]  # a forked file starts with its own; the parent's come from the parent
        found[int(me.get("pid") or 0)] = _Process(
            pid=int(me.get("pid") or 0),
            ppid=int(me.get("ppid") or 0),
            argv=[str(a) for a in me.get("argv") or []],
            forked_from=me.get("forked_from"),
            inherited=int(me.get("inherited") or 0),
            wall=float(me.get("wall") or 0),
            own=data,
            events=events,
        )
    for proc in found.values():
        proc.events = _inherited(found, proc) + proc.events
    ordered = sorted(found.values(), key=lambda p: p.wall)
    _name_roles(ordered)
    return ordered


def _inherited(found: dict[int, _Process], proc: _Process, depth: int = 0) -> list[dict]:
    """What a forked process has from before its fork: its parent's timeline up to then."""
    parent = found.get(proc.forked_from) if proc.forked_from else None
    if parent is None or depth > 20:
        return []
    before, _bad = parse_events(parent.own[: proc.inherited])
    return _inherited(found, parent, depth + 1) + before


def _name_roles(ordered: list[_Process]) -> None:
    """``main`` for what the command itself started, ``worker N`` for its forks (``master``
    then), ``child`` for anything further down or started by exec."""
    pids = {p.pid for p in ordered}
    roots = {p.pid for p in ordered if p.forked_from is None and p.ppid not in pids}
    workers: dict[int, int] = {}
    for proc in ordered:
        if proc.pid in roots:
            proc.role = "main"
        elif proc.forked_from in roots:
            workers[proc.forked_from] = workers.get(proc.forked_from, 0) + 1
            proc.role = f"worker {workers[proc.forked_from]}"
    for proc in ordered:
        if proc.pid in workers:
            proc.role = "master"


def _clock(proc: _Process) -> float:
    """Wall-clock time minus the probe's clock, for this process's events."""
    mine = [e for e in proc.events if e.get("event") == "process"][-1:]
    return proc.wall - float(mine[0].get("t") or 0) if mine else 0.0


def _labelled(proc: _Process, serve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hub's blocks named by when they happened. While the program runs the probe has one
    step, ``run``; with requests sent, a block during a path's requests is serving that path,
    one before them is start-up (a worker loading the app), one after them is the stop (not
    the app's doing: dropped). Without requests, ``run`` stays: the program's own work."""
    clock = _clock(proc)
    first = min((s["started"] for s in serve), default=None)
    last = max((s["ended"] for s in serve), default=None)

    def when(t: Any) -> tuple[str, str | None] | None:
        if first is None or last is None:
            return ("run", None)
        at = clock + float(t or 0)
        window = next((s for s in serve if s["started"] - 0.2 <= at <= s["ended"] + 0.2), None)
        if window is not None:
            return ("serve", window["path"])
        return None if at > last else ("import", None)

    events = []
    for event in proc.events:
        kind = event.get("event")
        if kind in ("block", "hub_run") and event.get("phase") == "run":
            named = when(event.get("t"))
            if named is None:
                continue
            event = {**event, "phase": named[0], "path": named[1]}
            if kind == "hub_run":  # each sample was taken during this run: the same moment
                samples = [
                    {**x, "phase": named[0], "path": named[1]} for x in event.get("samples") or []
                ]
                event["samples"] = samples
        events.append(event)
    return events


def _report(
    options: RunOptions,
    config: Config,
    cwd: Path,
    chdir: Path,
    argv: list[str],
    ran: _Ran,
    processes: list[_Process],
    output: tuple[OutputSummary, OutputSummary],
    project: Any,
) -> Report:
    report = Report(target=" ".join(options.command))
    report.notes.extend(ran.notes)
    root = processes[0] if processes else None
    python = next(
        (e.get("python") for e in (root.events if root else []) if e.get("event") == "process"),
        None,
    )
    lists = None
    if python:
        try:
            lists = load_patch_lists(python=python)
        except PatchListError as exc:
            report.notes.append(f"gevent's patch lists were not read: {exc}")
    seen: dict[tuple, Finding] = {}
    timelines = []
    used: dict[str, set[tuple[int, str]]] = {}
    for proc in processes:
        ctx = RuntimeContext.observe(
            _labelled(proc, ran.serve),
            app_roots=[chdir],
            cwd=cwd,
            mode="run",
            max_blocking=options.max_blocking,
            concurrency=(options.drive or DriveSettings()).concurrency,
            patched_modules=lists.patched_modules() if lists else None,
            startup_modules=lists.startup_modules if lists else (),
        )
        found, judge = _judge_runtime(ctx, config, project)
        for name, marks in judge.used.items():
            used.setdefault(name, set()).update(marks)
        for finding in found:
            key = (finding.rule, finding.path, finding.line, finding.column, finding.message)
            seen.setdefault(key, dataclasses.replace(finding, process=proc.pid))
        timelines.append(_process_timeline(ctx, proc, ran, output if proc is root else None))
        _app_errors(ctx.facts, proc, report, stopped=ran.stopped)
    report.findings = sorted(seen.values(), key=lambda f: f.sort_key)
    report.processes = [{"pid": p.pid, "role": p.role, "argv": p.argv} for p in processes]
    if project is not None:
        report.findings = recount_unused_noqa(report.findings, project, used, config, cwd)
    if not processes:
        report.errors.append(
            f"no Python process of `{argv[0]}` was recorded: it may start Python with -I, -E "
            "or -S, which skip sitecustomize (drop the flag for the audit)"
        )
    elif ran.returncode not in (None, 0) and not ran.stopped:
        said = _last_words(output[1])
        report.errors.append(f"the command exited with status {ran.returncode}{said}")
    if ran.serve:
        record_request_failures(Facts.from_events(ran.serve, [chdir], cwd), report)
    report.timeline = {
        "target": report.target,
        "command": argv,
        "mode": "run",
        "mode_reason": "the real command; every Python process it started was recorded",
        "python": python,
        "gevent": next((t.get("gevent") for t in timelines if t.get("gevent")), None),
        "processes": timelines,
        "requests": [
            {k: s.get(k) for k in ("path", "single", "wall", "statuses", "errors")}
            for s in ran.serve
        ],
        "app_output": {"stdout": output[0].to_json(), "stderr": output[1].to_json()},
        "duration_s": round(ran.duration, 3),
        "exit": {"returncode": ran.returncode, "signal": ran.signal, "stopped": ran.stopped},
    }
    return report


_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def _last_words(stderr: OutputSummary) -> str:
    """``: <the exception line>`` from the end of stderr, else its last non-blank line."""
    lines = [ln.strip() for ln in [*stderr.head, *stderr.tail] if ln.strip()]
    raised = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    last = (raised or lines or [""])[-1]
    return f": {last}" if last else ""


def _process_timeline(
    ctx: RuntimeContext,
    proc: _Process,
    ran: _Ran,
    output: tuple[OutputSummary, OutputSummary] | None,
) -> dict[str, Any]:
    empty = OutputSummary(bytes=0, lines=0)
    run = ProbeRun(
        events=proc.events,
        returncode=None,
        signal=None,
        timed_out=False,
        duration=ran.duration,
        stdout_summary=output[0] if output else empty,
        stderr_summary=output[1] if output else empty,
        pid=proc.pid,
    )
    target = Target(
        spec=" ".join(proc.argv), kind="command", module="", file=None, callable=None, factory=False
    )
    whole = build_timeline(ctx, run, target, "run", "", str(sys.executable))
    keep = (
        "python",
        "gevent",
        "patches",
        "loaded_before_patch",
        "patched_modules_loaded_before_patch",
        "replaced",
        "hang",
    )
    return {
        "pid": proc.pid,
        "role": proc.role,
        "argv": proc.argv,
        **{k: whole.get(k) for k in keep},
    }


def _app_errors(facts: Facts, proc: _Process, report: Report, *, stopped: bool) -> None:
    """An exception that ended a process of the command, with the line that raised it."""
    from ..model.events import ErrorEvent

    for event in facts.all("error"):
        if not isinstance(event, ErrorEvent) or event.phase != "run":
            continue
        if stopped and event.type == "KeyboardInterrupt":
            continue  # how patchaudit's Ctrl-C ended it
        message = (event.message or "").strip().splitlines()[:1]
        report.errors.append(
            f"{proc.role} (pid {proc.pid}) raised {event.type}: {''.join(message)}"
            f"{_raised_at(facts, event)}"
        )
