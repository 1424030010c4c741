"""Runtime rules only the pytest plugin can see (MPA153, MPA314, MPA315, MPA853), plus the
per-test hub-blocking hits the plugin reports under MPA851.

``pytest --gevent-audit`` (:mod:`patchaudit.pytest_plugin`) records the test process with the
runtime probe's own import recorder and patch hooks, so its facts are the probe's events
(``import``, ``patch``, ``settings``, ``stale``, ``owners``) and the runtime rules of
:mod:`.runtime_order` and the MPA45x/65x/75x rules run on them unchanged. It adds these events,
which the rules below read (a `patchaudit TARGET` audit has none, so they never fire there):

``pytest_session``
    ``startup_modules`` (``sys.modules`` when the plugin started recording: what pytest and its
    plugins had loaded), ``plugins`` (names of the pytest plugins loaded then),
    ``patched_before`` (the process was already patched: a launcher).
``pytest_gevent_use``
    At the end: ``first_test`` (node id of the first test after which a gevent hub existed on
    the main thread, or null), ``tests`` (how many such tests).
``test_block``
    One hub-blocking episode: ``test``, ``phase`` (setup/call/teardown), ``seconds`` (lower
    bound), ``limit`` (the threshold that applied), ``greenlet``, ``stack`` (frames, outermost
    first), ``test_file``/``test_line`` (the test's own location).
``patch_undone``
    Patched names found holding the original again after a test: ``test``, ``targets``
    (``["socket.socket"]``), ``culprit`` (module name of the pytest plugin holding the
    originals, or null), ``holders`` (``[{"module", "name", "file", "plugin"}]``).
``timeout_thread``
    pytest-timeout armed its ``thread`` method in a gevent-patched process: ``test``,
    ``timeout``, ``source`` ("command line", "configuration", "marker", "non-main thread"),
    ``file``/``line`` (where it was configured, when known).
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._findings import Category, Severity
from ._model import Hit, Runner, rule

if TYPE_CHECKING:
    from ..model.facts import Facts

# Loaded by every interpreter before any code runs, or implemented in C: listing them says nothing.
_ALWAYS_LOADED = frozenset({"os", "sys", "builtins", "time", "logging"})
_NO_FILE = {"command line": "<command line>"}
_NO_PATCH = "<pytest>"  # the place of session findings when nothing was patched
LAUNCHERS = (
    "python -m gevent.monkey --module pytest ...",
    "a wrapper script that calls gevent.monkey.patch_all() and then pytest.main()",
)


def pytest_loaded(facts: Facts) -> frozenset[str]:
    """What pytest and its plugins loaded: everything there before the plugin started recording,
    and later first imports (before the patch) whose importer chain never passes through a
    project file. The plugin's context takes it as its ``startup_modules``."""
    from ..model.events import PytestSessionEvent

    session = facts.first("pytest_session")
    if not isinstance(session, PytestSessionEvent):
        return frozenset()
    loaded = set(session.startup_modules or ())
    if not facts.patches:
        return frozenset(loaded)  # nothing was patched: nothing was loaded "before" it
    stdlib = sysconfig.get_paths()["stdlib"] + os.sep
    memo: dict[str, bool] = {}

    def through_project(module: str) -> bool:
        if module not in memo:
            memo[module] = False  # a cycle in the importer graph ends here
            file = facts.module_file(module)
            found = bool(file) and not file.startswith(stdlib) and facts.is_app_file(file)
            event = facts.imports.get(module)
            importer = event.importer if event is not None else None
            if not found and importer in facts.imports:
                found = through_project(importer)
            memo[module] = found
        return memo[module]

    for module in facts.loaded_before_patch():
        if not through_project(module):
            loaded.add(module)
    return frozenset(loaded)


@rule(
    code="MPA153",
    name="loaded-before-test-session",
    category=Category.PATCH_ORDER,
    severity=Severity.INFO,
    summary="pytest and its plugins loaded patched modules before the test process was patched",
    message="pytest and its plugins had loaded {modules} before this patch call; only a "
    "launcher patches before them",
    why="""
A pytest plugin or a `conftest.py` cannot be the first code to run: by the time they load,
pytest has imported `socket`, `select`, `selectors`, `threading`, `subprocess` and `signal`
(about 320 modules), so objects pytest and its plugins captured stay unpatched (FM-22). Most of
the time this is harmless, which is why this is information, not a warning; it becomes a bug
when a plugin hands one of those originals back to your tests (MPA315, pytest-socket) or when
`ssl` is among them (FM-01).
""",
    fix="Patch before pytest starts: `python -m gevent.monkey --module pytest ...`, or a wrapper "
    "script that calls `gevent.monkey.patch_all()` and then `pytest.main()`.",
    bad="""
# conftest.py
from gevent import monkey
monkey.patch_all()          # pytest already imported socket, threading, ...
""",
    good="""
# run the suite patched from the first line:
#   python -m gevent.monkey --module pytest tests/
""",
    references=("FM-22", "pytest-dev/pytest#6210", "gevent/gevent#1481"),
    runners=Runner.PYTEST,
)
def check_loaded_before_session(ctx) -> Iterator[Hit]:
    from ..model.events import PytestSessionEvent

    session = ctx.facts.first("pytest_session")
    if not isinstance(session, PytestSessionEvent):
        return
    if ctx.facts.first_patch is None or session.patched_before:
        return
    from ..model.facts import replaced_modules

    loaded = pytest_loaded(ctx.facts) & replaced_modules(ctx.facts)
    modules = sorted(m for m in loaded if not m.startswith("_") and m not in _ALWAYS_LOADED)
    if not modules:
        return
    path, line = ctx.facts.patch_place(default=_NO_PATCH)
    yield Hit(
        path=path,
        line=line,
        column=1,
        args={"modules": ", ".join(f"`{m}`" for m in modules)},
        evidence={
            "modules": modules,
            "plugins": session.plugins or [],
            "launchers": list(LAUNCHERS),
        },
    )


@rule(
    code="MPA314",
    name="test-process-not-patched",
    category=Category.PARTIAL_PATCH,
    severity=Severity.WARNING,
    summary="The tests ran gevent's hub in a process that nothing monkey-patched",
    message="the tests use gevent (first `{test}`) but nothing patched the test process",
    why="""
The tests start gevent's hub, but no `patch_all()` ran in the test process: every stdlib socket,
`time.sleep`, lock and queue the code under test uses blocks the hub instead of yielding, so
the tests exercise a different program from the patched one in production, and a test that
waits for a greenlet while blocking can hang. The usual causes are patching in a module the
tests never import, a launcher that patched only the xdist controller (workers are fresh
interpreters, pytest-xdist#1069), or relying on a server (gunicorn's gevent worker) to patch
(FM-22, FM-07).
""",
    fix="Run the suite patched: `python -m gevent.monkey --module pytest ...`. Under pytest-xdist "
    "that patches the controller only: workers are fresh interpreters and patching inside them "
    "breaks execnet, so run gevent suites without `-n`. Libraries that deliberately test "
    "unpatched can ignore MPA314 (`[tool.patchaudit] ignore`).",
    bad="""
# tests/test_pool.py -- run as `pytest`
import gevent
def test_fetch():
    gevent.joinall([gevent.spawn(fetch, url) for url in urls])   # fetch uses blocking sockets
""",
    good="""
# run as `python -m gevent.monkey --module pytest`
import gevent
def test_fetch():
    gevent.joinall([gevent.spawn(fetch, url) for url in urls])
""",
    references=("FM-22", "FM-07", "pytest-dev/pytest-xdist#1069"),
    runners=Runner.PYTEST,
)
def check_not_patched(ctx) -> Iterator[Hit]:
    from ..model.events import GeventUseEvent

    use = ctx.facts.first("pytest_gevent_use")
    if not isinstance(use, GeventUseEvent) or not use.first_test or ctx.facts.patches:
        return
    facts = ctx.facts
    chain = facts.chain("gevent")
    # the line the recorder saw executing is the import statement itself; reading the source
    # is the fallback, and costs a parse of a big test module
    site = facts.app_import_site(chain, outermost=True, recorded_first=True)
    path, line = site or use.location(facts)
    yield Hit(
        path=path,
        line=line,
        column=1,
        args={"test": use.first_test},
        evidence={
            "first_test": use.first_test,
            "tests_using_gevent": use.tests,
            "import_chain": chain,
            "launchers": list(LAUNCHERS),
        },
    )


@rule(
    code="MPA315",
    name="patch-undone",
    category=Category.PARTIAL_PATCH,
    severity=Severity.ERROR,
    summary="Something put an unpatched original back while the tests ran",
    message="{targets} {was} set back to the unpatched original after `{test}` by {culprit}; "
    "later tests ran unpatched",
    why="""
After a test, a patched name held gevent's object no more but the original again. The known
case is pytest-socket: it saves `socket.socket` when pytest imports it, before a `conftest.py`
can patch, and writes that saved original back after every test, so from the second test on
every socket blocks the hub (verified locally; the peers notes). It is a stale reference (FM-03)
that a plugin re-installs, and a consequence of patching after pytest started (FM-22).
""",
    fix="Patch before pytest imports its plugins (`python -m gevent.monkey --module pytest`), so "
    "the plugin saves gevent's object; or disable the plugin for this suite (`-p no:socket`).",
    bad="""
# conftest.py, with pytest-socket installed
from gevent import monkey
monkey.patch_all()          # pytest_socket._true_socket is still the stdlib socket
""",
    good="""
# python -m gevent.monkey --module pytest   (pytest-socket then saves gevent's socket)
""",
    references=("FM-03", "FM-22"),
    runners=Runner.PYTEST,
)
def check_patch_undone(ctx) -> Iterator[Hit]:
    from ..model.events import PatchUndoneEvent

    for event in ctx.facts.all("patch_undone"):
        if not isinstance(event, PatchUndoneEvent):
            continue
        path, line = ctx.facts.patch_place(default=_NO_PATCH)
        targets = event.targets or []
        culprit = event.culprit
        holders = event.holders or []
        if culprit:
            names = [f"`{h['module']}.{h['name']}`" for h in holders if h.get("module") == culprit]
            who = f"pytest plugin `{culprit}` (it holds the original as {', '.join(names[:3])})"
        elif holders:
            who = (
                "code outside pytest's plugins (originals held by "
                + ", ".join(f"`{h['module']}.{h['name']}`" for h in holders[:3])
                + ")"
            )
        else:
            who = "the test or one of its fixtures"
        yield Hit(
            path=path,
            line=line,
            column=1,
            args={
                "targets": ", ".join(f"`{t}`" for t in targets),
                "was": "was" if len(targets) == 1 else "were",
                "test": event.test,
                "culprit": who,
            },
            evidence={"first_test": event.test, "targets": targets, "holders": holders},
        )


@rule(
    code="MPA853",
    name="timeout-thread-method-under-gevent",
    category=Category.BLOCKING_CALL,
    severity=Severity.WARNING,
    summary="pytest-timeout's thread method is armed in a gevent-patched process",
    message="pytest-timeout uses its `thread` method ({source}) in a patched process: its timer "
    "is a greenlet and cannot fire while a test blocks the hub",
    why="""
pytest-timeout's `thread` method starts a `threading.Timer`; once `threading` is patched that
timer is a greenlet, which only runs when the test yields. A test stuck in a blocking call --
exactly the hang a timeout is for -- never yields, so the timeout never fires: a 3 s busy loop
with `--timeout=1 --timeout-method=thread` passed (verified locally; the peers notes), while the
`signal` method failed it after 1 s. It is a blocking call the patch does not cover (FM-29) in
a pytest run (FM-22).
""",
    fix="Use the `signal` method (`--timeout-method=signal`, `timeout_method = signal`; the "
    "default on POSIX); it interrupts the main thread whatever the hub is doing.",
    bad="""
# pyproject.toml
[tool.pytest.ini_options]
timeout = 30
timeout_method = "thread"
""",
    good="""
# pyproject.toml
[tool.pytest.ini_options]
timeout = 30
timeout_method = "signal"
""",
    references=("FM-22", "FM-29"),
    runners=Runner.PYTEST,
)
def check_timeout_thread(ctx) -> Iterator[Hit]:
    from ..model.events import TimeoutThreadEvent

    events = [e for e in ctx.facts.all("timeout_thread") if isinstance(e, TimeoutThreadEvent)]
    if not events:
        return
    first = events[0]
    path, line = first.location(ctx.facts, default=_NO_FILE.get(first.source or "", _NO_PATCH))
    yield Hit(
        path=path,
        line=line,
        column=1,
        args={"source": first.source or "configured"},
        evidence={
            "first_test": first.test,
            "timeout": first.timeout,
            "tests": len(events),
        },
    )


def blocked_test_hits(ctx) -> Iterator[Hit]:
    """MPA851 hits, one per blocking episode of a test, at the innermost project frame.

    Not a registered check (MPA851 is :func:`.blocking.check_hub_blocked`, which reads
    the probe's ``block`` events); the plugin renders these with MPA851's metadata so users see
    one code for one problem.
    """
    from ..model.events import TestBlockEvent

    facts = ctx.facts
    for event in facts.all("test_block"):
        if not isinstance(event, TestBlockEvent):
            continue
        stack = event.stack or []
        project = [f for f in stack if facts.is_app_file(f.get("file"))]
        frame = project[-1] if project else None
        if frame is not None:
            path, line = facts.where(frame)
            function = frame.get("function", "?")
        else:
            path, line = event.location(facts)
            function = stack[-1].get("function", "?") if stack else "?"
        shown = project or stack[-5:]
        yield Hit(
            path=path,
            line=line,
            column=1,
            args={
                "seconds": float(event.seconds or 0),
                "during": f"during test `{event.test}`"
                + (f" ({event.phase})" if event.phase not in (None, "call") else ""),
                "function": function,
            },
            evidence={
                "test": event.test,
                "blocked_s": event.seconds,
                "threshold_s": event.limit,
                "greenlet": event.greenlet,
                "blocked_stack": [
                    f"{facts.display(f.get('file'))}:{f.get('line')} in {f.get('function')}"
                    + (f": {f['code']}" if f.get("code") else "")
                    for f in shown
                ],
            },
        )
