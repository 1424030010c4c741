"""`patchaudit TARGET`: import the app in a child process the way its server would, then report.

The static analyzer runs over the project folder first, in this process. Then two probe runs go
in parallel: the requested mode, and a patch-first baseline whose stale references are the
noise floor every correct program has. Both views are merged into one report. SIGINT/SIGTERM
(inside :func:`patchaudit._process.interruptible`) stop the audit at any point with a partial
report.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _process, _scratch
from .._config import Config
from .._findings import Finding, Report
from .._gevent_patches import PatchListError, PatchLists, load_patch_lists
from .._process import Interrupted
from ..judge import Judge, merge, project_noqa, recount_unused_noqa, source_noqa
from ..model.events import TargetEvent
from ..model.facts import RuntimeContext
from ..model.known import known_importers, known_patch_points
from ..rules import REGISTRY, Runner  # the package import registers every rule
from ..static import analyze
from ..static._replay import Replay, simulate
from ._gunicorn import GunicornConfig, load_gunicorn_config
from ._launcher import ProbeError, ProbeRun, run_probe
from ._outcome import (
    build_timeline,
    record_failure,
    record_request_failures,
    record_stand_in_gaps,
)
from ._target import Target, TargetError, parse_target, resolve_mode


@dataclass
class AuditOptions:
    target: str
    mode: str = "auto"
    chdir: Path = field(default_factory=Path.cwd)
    pythonpath: list[Path] = field(default_factory=list)
    python: str | None = None
    timeout: float = 60.0
    paths: list[str] = field(default_factory=lambda: ["/"])
    requests: int = 20
    concurrency: int = 10
    max_blocking: float = 0.1
    gunicorn_config: Path | None = None
    static: bool = True


@dataclass
class AuditResult:
    report: Report
    target_failed: bool  # the target could not be imported: exit 2
    #: Set when SIGINT/SIGTERM stopped the audit: the report is partial, exit 130/143.
    interrupted: Interrupted | None = None


def audit(
    options: AuditOptions,
    config: Config,
    *,
    cwd: Path,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> AuditResult:
    """Run the audit. Inside :func:`patchaudit._process.interruptible`, SIGINT/SIGTERM stop it
    early: the probes are killed and the result is built from what was gathered so far (the
    static findings if they were done, the events the probes wrote), with ``interrupted`` set.
    ``progress`` gets a short line as the audit moves on (for a status line on a terminal).
    """
    chdir = options.chdir.resolve()
    pythonpath = [p.resolve() for p in options.pythonpath]
    target = parse_target(options.target, chdir, pythonpath)
    got = _Gathered(python=options.python or sys.executable)
    try:
        say = progress or (lambda text: None)
        _gather(options, config, cwd, use_cache, target, chdir, pythonpath, got, say)
    except BaseException as exc:
        # Also what the interrupt turned into on its way out of the static check's pool.
        got.interrupted = _process.interruption(exc)
        if got.interrupted is None:
            raise
    try:
        return _result(options, config, cwd, target, chdir, pythonpath, got)
    except Interrupted as exc:  # the signal landed while the report was being put together
        got.interrupted = exc  # a second one exits at once, so this cannot recur
        return _result(options, config, cwd, target, chdir, pythonpath, got)


@dataclass
class _Gathered:
    """What the audit has so far; an interrupted audit reports exactly this."""

    python: str
    static_report: Report | None = None
    project: Any = None
    mode: str | None = None
    reason: str = ""
    #: Loaded by the launcher itself before the app's first line runs (gunicorn's master).
    launcher_modules: tuple[str, ...] = ()
    run: ProbeRun | None = None
    baseline_run: ProbeRun | None = None
    lists: PatchLists | None = None
    interrupted: Interrupted | None = None


#: Seconds an interrupted audit waits for the killed probes' events to be read back.
_COLLECT_WAIT = 1.0


def _gather(
    options: AuditOptions,
    config: Config,
    cwd: Path,
    use_cache: bool,
    target: Target,
    chdir: Path,
    pythonpath: list[Path],
    got: _Gathered,
    say: Callable[[str], None],
) -> None:
    if options.static:
        # The audited target is how this program starts, whatever else the tree launches.
        entry = dataclasses.replace(config, entry_points=(*config.entry_points, target.module))
        got.static_report, got.project = analyze(
            [chdir],
            entry,
            cwd=cwd,
            use_cache=use_cache,
            progress=lambda text: say(f"static check: {text}"),
        )
    env = _probe_env()
    gunicorn = _gunicorn_config(options, chdir, pythonpath, got.python, env)
    got.mode, got.reason = resolve_mode(
        options.mode, _target_patches(got.project, target), gunicorn
    )
    # A scratch folder, not a TemporaryDirectory: it is also removed on a second Ctrl-C, and by
    # the probes' supervisors when patchaudit is killed (see patchaudit._scratch).
    with _scratch.scratch_dir("audit") as workdir:
        spec = _spec(target, got.mode, chdir, pythonpath, options, workdir / "events.jsonl")
        if gunicorn is not None:  # the probe runs the config and its hooks where gunicorn does
            spec["gunicorn"] = gunicorn.to_spec()
            got.launcher_modules = gunicorn.master_modules
        baseline_spec = _spec(
            target, "patch-first", chdir, pythonpath, options, workdir / "baseline.jsonl"
        )
        # Not `with`: its exit joins the workers, which an interrupt must not wait for.
        pool = ThreadPoolExecutor(3, thread_name_prefix="patchaudit-audit")
        futures: list[Future] = []
        try:
            for run_spec in (spec, baseline_spec):
                futures.append(
                    pool.submit(
                        run_probe,
                        run_spec,
                        python=got.python,
                        timeout=options.timeout,
                        env=env,
                        workdir=workdir,
                    )
                )
            # Needed for the report either way; it runs while the probes do.
            futures.append(pool.submit(load_patch_lists, python=got.python))
            main_future, base_future, lists_future = futures
            stage = _Stage(Path(spec["events_path"]), target.spec, options)
            got.run = _waited(main_future, lambda: say(stage.text()))
            try:
                got.baseline_run = _waited(
                    base_future, lambda: say("waiting for the patch-first baseline run")
                )
            except ProbeError:
                got.baseline_run = None
            got.lists = lists_future.result()
        except BaseException as exc:
            # Interrupted, or the main run could not start: nothing of ours may keep running.
            _process.kill_all()
            if _process.interruption(exc) is not None:
                _collect(got, futures)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _waited(future: Future, tell: Callable[[], None]) -> Any:
    """``future.result()``, telling how it goes every quarter of a second meanwhile."""
    while not future.done():
        tell()
        wait([future], timeout=0.25)
    return future.result()


class _Stage:
    """Where the main probe is, for the status line: importing until its events file has the
    ``target`` event (the app is imported), then serving. Read incrementally as it grows."""

    def __init__(self, events: Path, target: str, options: AuditOptions) -> None:
        self._events, self._offset, self._imported = events, 0, False
        self._target, self._options = target, options
        self._started = time.monotonic()

    def text(self) -> str:
        self._imported = self._imported or self._has_target_event()
        elapsed = f"{time.monotonic() - self._started:.0f}s of at most {self._options.timeout:g}s"
        if not self._imported:
            return f"importing `{self._target}` in the probe ({elapsed})"
        requests = self._options.requests * len(self._options.paths)
        return f"serving `{self._target}`: {requests} requests ({elapsed})"

    def _has_target_event(self) -> bool:
        try:
            with open(self._events, "rb") as stream:
                stream.seek(self._offset)
                chunk = stream.read()
        except OSError:  # not created yet
            return False
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        self._offset += len(complete)
        return b'{"event": "target"' in complete


def _collect(got: _Gathered, futures: list[Future]) -> None:
    """After kill_all(): take what the killed runs left (their events files are still read)."""
    deadline = time.monotonic() + _COLLECT_WAIT
    done = [_finished(f, deadline) for f in futures]
    while len(done) < 3:
        done.append(None)
    if got.run is None:
        got.run = done[0]
    if got.baseline_run is None:
        got.baseline_run = done[1]
    if got.lists is None:
        got.lists = done[2] or _memoised_lists(got.python)


def _finished(future: Future, deadline: float) -> Any:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except BaseException:  # refused to start (Interrupted), killed mid-way or still running
        return None


def _memoised_lists(python: str) -> PatchLists | None:
    """The patch lists if this process already has them; an interrupt starts no probe."""
    try:
        return load_patch_lists(python=python, timeout=_COLLECT_WAIT)
    except (PatchListError, Interrupted):
        return None


def _result(
    options: AuditOptions,
    config: Config,
    cwd: Path,
    target: Target,
    chdir: Path,
    pythonpath: list[Path],
    got: _Gathered,
) -> AuditResult:
    report = Report(target=options.target)
    static_report, run = got.static_report, got.run
    app_roots = [chdir, *pythonpath]
    facts = ctx = None
    if run is not None and got.mode is not None:
        lists = got.lists
        base = got.baseline_run
        ctx = RuntimeContext.observe(
            run.events,
            app_roots=app_roots,
            cwd=cwd,
            mode=got.mode,
            max_blocking=options.max_blocking,
            concurrency=options.concurrency,
            baseline_events=base.events if base else None,
            patched_modules=lists.patched_modules() if lists else frozenset(),
            startup_modules=_startup(lists, got.launcher_modules),
        )
        facts = ctx.facts
    found_at_runtime: list[Finding] = []
    static_findings = static_report.findings if static_report else []
    if ctx is not None:
        found_at_runtime, judge = _judge_runtime(ctx, config, got.project)
        if got.project is not None and static_report is not None:
            static_findings = recount_unused_noqa(
                static_findings, got.project, judge.used, config, cwd
            )
    report.findings = merge(static_findings, found_at_runtime)
    if static_report is not None:
        report.errors.extend(static_report.errors)
        report.files_seen, report.files_analyzed = (
            static_report.files_seen,
            static_report.files_analyzed,
        )
    failed = False
    if run is not None and facts is not None and ctx is not None and got.mode is not None:
        # A run cut short by the interrupt did not fail: only a finished one is judged.
        if got.interrupted is None or facts.first("done") is not None:
            failed = record_failure(run, facts, report)
            failed = record_request_failures(facts, report) or failed
            record_stand_in_gaps(facts, report)
        target_event = facts.first("target")
        if isinstance(target_event, TargetEvent) and not target_event.wsgi:
            reason = target_event.reason or "no WSGI callable"
            if target.callable and not failed:  # named by the user: a typo is an error
                report.errors.append(f"cannot serve `{target.spec}`: {reason}")
                failed = True
            else:  # none named: a module that is not a WSGI app (or it failed, said above)
                report.notes.append(f"requests were not probed: {reason}")
        report.timeline = build_timeline(ctx, run, target, got.mode, got.reason, got.python)
    if got.interrupted is not None:
        report.interrupted = f"{got.interrupted}: results are partial"
    report.findings.sort(key=lambda f: f.sort_key)
    return AuditResult(report=report, target_failed=failed, interrupted=got.interrupted)


def _startup(lists: PatchLists | None, launcher: tuple[str, ...]) -> Any:
    """What was loaded before the app ran: the interpreter's start-up (as the run recorded it)
    and, under gunicorn, what its master imports before the config: gunicorn loads `ssl` and
    `socket` itself, so the config's own imports of them are not what put them before the patch.
    """
    fallback = lists.startup_modules if lists else ()
    if not launcher:
        return fallback

    def startup(facts: Any) -> list[str]:
        start = facts.first("start")
        return [*((start.get("startup_modules") if start else None) or fallback), *launcher]

    return startup


def _gunicorn_config(
    options: AuditOptions, chdir: Path, pythonpath: list[Path], python: str, env: dict[str, str]
) -> GunicornConfig | None:
    """The gunicorn settings, when the mode may depend on them (computed in a child)."""
    path = options.gunicorn_config
    if path is not None and not path.is_file():
        raise TargetError(f"gunicorn config not found: {path}")
    if options.mode not in ("auto", "gunicorn", "gunicorn-preload"):
        return None
    return load_gunicorn_config(
        path.resolve() if path else None,
        python=python,
        chdir=chdir,
        env=env,
        pythonpath=pythonpath,
        timeout=options.timeout,
    )


def _target_patches(project, target: Target) -> bool:
    """Whether importing the target runs a patch call, judged from the static import graph."""
    if project is None:
        return False
    call_lines = {k: s.module_calls for k, s in project.modules.items()}
    replay = Replay(target.module, as_main=False)
    sim = simulate(replay, project.index, call_lines, known_importers(), known_patch_points())
    return sim is not None


def _spec(
    target: Target,
    mode: str,
    chdir: Path,
    pythonpath: list[Path],
    options: AuditOptions,
    events: Path,
) -> dict:
    return {
        "target": target.to_spec(),
        "mode": mode,
        "chdir": str(chdir),
        "pythonpath": [str(p) for p in pythonpath],
        "events_path": str(events),
        "app_roots": [str(chdir), *(str(p) for p in pythonpath)],
        "serve": {
            "paths": options.paths,
            "requests": options.requests,
            "concurrency": options.concurrency,
            "max_blocking": options.max_blocking,
            "request_timeout": min(10.0, options.timeout / 2),
        },
    }


def _probe_env() -> dict[str, str]:
    """The one base environment of both probe runs: the user's, all of it.

    The app runs as it would in production, so it sees ``PATH``, ``DATABASE_URL`` and the rest;
    the launcher adds the probe's own settings (gevent's monitor thread, ``PYTHONPATH``) on
    top, from each run's spec.
    """
    return dict(os.environ)


def runtime_findings(
    ctx: RuntimeContext, config: Config | None = None, project=None
) -> list[Finding]:
    """Every probe rule applied to what the probe saw, judged like the static check: selection
    and per-file-ignores when ``config`` is given, and ``# noqa`` (from the static ``project``
    when there is one, else read from the files)."""
    return _judge_runtime(ctx, config, project)[0]


def _judge_runtime(
    ctx: RuntimeContext, config: Config | None, project
) -> tuple[list[Finding], Judge]:
    cwd = ctx.facts.cwd
    judge = Judge(config, cwd, project_noqa(project) if project is not None else source_noqa(cwd))
    findings: list[Finding] = []
    for rule in REGISTRY.values():
        if rule.runs_in(Runner.PROBE):
            findings.extend(judge.judge(rule, rule.check(ctx)))
    return findings, judge


__all__ = ["AuditOptions", "AuditResult", "ProbeError", "TargetError", "audit"]
