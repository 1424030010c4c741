"""What a probe run came to: why it failed (``report.errors``) and the patch timeline.

Split from :mod:`._audit`, which runs the probes; these only read a finished (or interrupted)
run's facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from .._findings import Report
from ..model.events import (
    ErrorEvent,
    Event,
    ExitEvent,
    RequestErrorEvent,
    ServeEvent,
    SettingsEvent,
    StalledEvent,
    StartEvent,
    TerminatedEvent,
    waited_for,
)
from ..model.facts import Facts, RuntimeContext
from ..model.machinery import is_machinery
from ..rules.blocking import startup_blocks
from ._launcher import ProbeRun
from ._target import Target

_E = TypeVar("_E", bound=Event)


def record_failure(run: ProbeRun, facts: Facts, report: Report) -> bool:
    """Put the reason a probe run went wrong into ``report.errors``; True when the target could
    not be imported (exit code 2)."""
    error = _first(facts, ErrorEvent)
    exited = _first(facts, ExitEvent)
    if run.timed_out:
        report.errors.append(
            f"the target did not finish within the timeout ({run.duration:.0f}s){_stuck_at(facts)}"
        )
        return error is None or error.phase == "import"
    if exited is not None:
        where = f" at {facts.display(exited.file)}:{exited.line}"
        report.errors.append(
            f"the target called os._exit({exited.code}){where} during {exited.phase}"
        )
        return exited.phase in ("import", "startup")
    if error is not None:
        chain = " -> ".join(error.import_chain or [])
        where = f" (import chain: {chain})" if chain else ""
        if error.phase in ("config", "hook"):  # gunicorn would not start: neither can we
            step = next((e.get("step") for e in facts.all("gunicorn") if e.get("raised")), None)
            shown = "config file" if step in (None, "config") else f"`{step}` hook"
            report.errors.append(
                f"gunicorn's {shown} raised {error.type}: {error.message}{_raised_at(facts, error)}"
            )
            return True
        if error.error_kind == "system-exit":
            report.errors.append(f"the target called sys.exit({error.code}) while importing")
        else:
            at = _raised_at(facts, error)
            message = (error.message or "").strip().splitlines()[:1]  # one line (LoopExit: 4)
            report.errors.append(
                f"cannot import the target: {error.type}: {''.join(message)}{at}{where}"
            )
        return (error.phase or "import") == "import"
    if facts.first("done") is None:
        reason = f"signal {run.signal}" if run.signal else f"exit code {run.returncode}"
        report.errors.append(f"the target ended the interpreter during the audit ({reason})")
        return True
    return False


def record_stand_in_gaps(facts: Facts, report: Report) -> None:
    """Hooks cut short because the audit's stand-ins for gunicorn's objects lack something."""
    for event in facts.all("gunicorn"):
        if event.get("stand_in_gap"):
            report.notes.append(
                f"gunicorn's {event.get('step')} at {facts.display(event.file)}:{event.line or 1} "
                f"stopped at {event.get('raised')}: the audit's stand-in for gunicorn's objects "
                "lacks it, so the rest of that hook did not run"
            )


def record_request_failures(facts: Facts, report: Report) -> bool:
    """Requests the served app answered with a 5xx, or not at all, into ``report.errors``;
    True when there were any. The audit judges how the app serves; an app that fails its
    requests was not served, and saying "All checks passed" about it would be wrong."""
    raised: dict[str, RequestErrorEvent] = {}
    for event in facts.all("request_error"):
        if isinstance(event, RequestErrorEvent):
            raised.setdefault(event.path or "/", event)
    stalled = {e.path or "/": e for e in facts.all("stalled") if isinstance(e, StalledEvent)}
    failed = False
    for serve in facts.all("serve"):
        if not isinstance(serve, ServeEvent):
            continue
        codes = {str(serve.get("single_status")): 1}
        for code, count in (serve.statuses or {}).items():
            codes[code] = codes.get(code, 0) + count
        bad = {c: n for c, n in codes.items() if not c.isdigit() or int(c) >= 500}
        if not bad:
            continue
        failed = True
        path = serve.path or "/"
        shown = ", ".join(f"{_STATUS_SHOWN.get(c, c)} x{n}" for c, n in bad.items())
        error = raised.get(path)
        cause = f": {error.type}: {error.message}{_app_line(facts, error)}" if error else ""
        total = sum(codes.values())
        # requests that stopped completing: where each parked handler and thread was
        hang = "".join(f"; {line}" for line in hang_lines(facts, stalled.get(path)))
        report.errors.append(
            f"{sum(bad.values())} of {total} requests to {path} failed ({shown}){cause}{hang}"
        )
    return failed


#: Status keys of a ``serve`` event that are not HTTP codes, as the error names them.
_STATUS_SHOWN = {"none": "no response", "not-sent": "not sent"}


def _app_line(facts: Facts, event: Event) -> str:
    """`` at file:line`` of the application's innermost frame in ``event``'s traceback."""
    own = facts.app_frame(event.get("traceback"))
    return "" if own is None else f" at {facts.at(own)}"


def _raised_at(facts: Facts, error: ErrorEvent) -> str:
    """`` at file:line`` of the raise, and the application's own line that led there when the
    raise is in a library; a syntax error is where the parser stopped."""
    if error.error_kind == "syntax-error" and error.file:
        return f" at {facts.display(error.file)}:{error.line or 1}"
    frames = [f for f in error.get("traceback") or [] if isinstance(f, dict) and f.get("file")]
    if not frames:
        return ""
    raised, own = frames[-1], facts.app_frame(frames)  # innermost last
    if own is None or own is raised:
        return f" at {facts.at(raised)}"
    return f" at {facts.at(raised)}, from {facts.at(own)}"


def _first(facts: Facts, kind: type[_E]) -> _E | None:
    """The first event of ``kind``'s type (None when the run has none)."""
    found = facts.first(kind.KIND)
    return found if isinstance(found, kind) else None


def _stuck_at(facts: Facts) -> str:
    """Where the app was when the timeout hit: its innermost own frame, else the last event;
    then each parked greenlet and native thread that was in the app's code, and what it waits
    on (a hang is usually a greenlet waiting for one that never comes)."""
    terminated = _first(facts, TerminatedEvent)
    stacks = (terminated.main_greenlet_stack, terminated.stack) if terminated else ()
    where = next((f for s in stacks if (f := facts.app_frame(s)) is not None), None)
    if where is not None:
        text = f"; stuck at {_shown(facts, where)}"
    else:
        # the timeout's own events say nothing about where the app was
        seen = [e for e in facts.events if e.kind not in ("terminated", "done")]
        if not seen:
            text = "; last event: none"
        else:
            text = f"; last event: {seen[-1].kind} {seen[-1].get('module', '')}".rstrip()
    return text + "".join(f"; {line}" for line in hang_lines(facts, terminated))


def hang_lines(facts: Facts, dump: TerminatedEvent | StalledEvent | None) -> list[str]:
    """One line per parked greenlet and native thread in the app's code in a hang dump (the
    timeout's, or the one taken when requests stopped completing)."""
    if dump is None:
        return []
    parked: dict[str, int] = {}
    for greenlet in dump.greenlets or []:
        frame = facts.app_frame(greenlet.get("stack"))
        if frame is not None:
            held = waited_for(greenlet)
            # gevent's compiled queues and events have no Python frame: the app's line says
            waits = frame.get("code") if held else greenlet.get("waits_on") or frame.get("code")
            on = f" on {held}" if held else ""
            line = f"parked at {_shown(facts, frame)}" + _said(waits) + on
            parked[line] = parked.get(line, 0) + 1
    threads = []
    for thread in dump.threads or []:
        frame = facts.app_frame(thread.get("stack"))
        if frame is not None:
            held = waited_for(thread)
            on = f" on {held}" if held else ""
            threads.append(f"a thread at {_shown(facts, frame)}" + _said(frame.get("code")) + on)
    greenlets = [f"{'a greenlet' if n == 1 else f'{n} greenlets'} {p}" for p, n in parked.items()]
    return sorted(greenlets) + sorted(threads)


def _said(text: object) -> str:
    return f" (`{text.strip()}`)" if isinstance(text, str) and text.strip() else ""


def _shown(facts: Facts, frame: Mapping[str, Any]) -> str:
    return f"{facts.at(frame)} in {frame.get('function')}"


def build_timeline(
    ctx: RuntimeContext, run: ProbeRun, target: Target, mode: str, reason: str, python: str
) -> dict:
    facts = ctx.facts
    start = _first(facts, StartEvent)
    loaded = facts.loaded_before_patch()
    watched = ctx.patched_modules - ctx.startup_modules
    settings = _first(facts, SettingsEvent)
    return {
        "target": target.spec,
        "mode": mode,
        "mode_reason": reason,
        "python": (start.python if start else None) or python,
        "gevent": start.gevent_version if start else None,
        "patches": [
            {
                "framework": p.framework,
                "function": p.function,
                "location": f"{facts.display(p.file)}:{p.line}",
                "arguments": p.kwargs or {},
                "main_thread": p.main_thread,
                "threads": p.threads or [],
            }
            for p in facts.patches
        ],
        # gunicorn's config file and server hooks, in the order the probe ran them
        "gunicorn": [
            {
                "step": e.get("step"),
                "process": e.get("process"),
                "location": f"{facts.display(e.file)}:{e.line or 1}",
                "after_patch": e.get("after_patch"),
                "calls": [f"{c.get('function')} at {facts.at(c)}" for c in e.get("calls") or []],
                # cut short where the stand-ins for gunicorn's objects lack an attribute
                "stopped": e.get("raised") if e.get("stand_in_gap") else None,
            }
            for e in facts.all("gunicorn")
        ],
        "loaded_before_patch": len(loaded),
        "patched_modules_loaded_before_patch": [
            {"module": m, "chain": chain}
            for m in loaded
            if m in watched and not m.startswith("_")
            # modules gevent/eventlet load for themselves are part of patching, not a problem
            for chain in [facts.shortest_chain(m)]
            if not any(is_machinery(step) for step in chain[:-1])
        ],
        "replaced": (settings.saved if settings else None) or {},
        "app_errors": [
            {"path": e.path, "type": e.type, "message": e.message}
            for e in facts.all("request_error")
            if isinstance(e, RequestErrorEvent)
        ],
        # the probe's own measurements, passed through as it wrote them
        "requests": [
            {k: e.get(k) for k in ("path", "single", "wall", "statuses", "errors")}
            for e in facts.all("serve")
        ],
        "app_output": {
            "stdout": run.stdout_summary.to_json(),
            "stderr": run.stderr_summary.to_json(),
        },
        "duration_s": round(run.duration, 3),
        "exit": {"returncode": run.returncode, "signal": run.signal, "timed_out": run.timed_out},
        # on a timeout: every parked greenlet and native thread in the app's code
        "hang": hang_lines(facts, _first(facts, TerminatedEvent)),
        # importing or building the app held the hub: start-up time, not a serving block
        "startup_blocking": startup_blocks(ctx),
    }
