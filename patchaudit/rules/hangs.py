"""MPA854, requests that stopped completing while the process lived on (a hang while serving).

The probe dumps every parked greenlet when a request gets no response within the request
timeout (``stalled`` events); this rule names each app line where a request's greenlet waits.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._findings import Category, Severity
from ._model import Hit, Runner, rule


@rule(
    code="MPA854",
    name="request-stalled",
    category=Category.BLOCKING_CALL,
    severity=Severity.ERROR,
    summary="Requests to the running app stopped completing: handlers wait forever",
    message="a request to `{path}` did not finish within {timeout}s: it waits at `{code}`{on}",
    why="""
Observed while serving: requests got no response within the request timeout while the process
lived on, and the greenlet handling each one was parked at this line. The hub is idle, so
gevent's monitor sees nothing and py-spy cannot show parked greenlets: a lock-order deadlock, or
a lock, event, queue or result that only a native thread was to release or set (FM-20), looks
like this. The report lists every parked greenlet and every thread in
the app's code, and the lock, event or queue each waits on where the probe could tell.
""",
    fix="Take locks in one global order, give waits a timeout (`event.wait(timeout)`, "
    "`queue.get(timeout=...)`, `lock.acquire(timeout=...)`), and wake greenlets from the hub's "
    "thread only.",
    bad="""
def transfer(source, target):
    with source.lock:
        with target.lock:      # the opposite transfer holds it and waits for ours
            move(source, target)
""",
    good="""
def transfer(source, target):
    first, second = sorted((source, target), key=lambda a: a.name)
    with first.lock:
        with second.lock:
            move(source, target)
""",
    references=("FM-20",),
    runners=(Runner.PROBE,),
)
def check_request_stalled(ctx) -> Iterator[Hit]:
    from ..model.events import StalledEvent, waited_for

    seen: set[tuple[str, int]] = set()
    for event in ctx.facts.all("stalled"):
        if not isinstance(event, StalledEvent):
            continue
        for greenlet in event.greenlets or []:
            frame = ctx.facts.app_frame(greenlet.get("stack"))
            if not greenlet.get("request") or frame is None:
                continue  # a background greenlet parked on a sleep is not a stalled request
            path, line = ctx.facts.where(frame)
            if (path, line) in seen:
                continue
            seen.add((path, line))
            on = waited_for(greenlet)
            yield Hit(
                path=path,
                line=line,
                column=1,
                args={
                    "path": event.path or "/",
                    "timeout": f"{event.timeout or 0:g}",
                    "code": (frame.get("code") or frame.get("function") or "?").strip(),
                    "on": f" on {on}" if on else "",
                },
                evidence={"waits_for": greenlet.get("waits_for"), "stack": greenlet.get("stack")},
            )
