"""``pytest --gevent-audit``: audit gevent/eventlet monkey-patching while the test suite runs.

Registered through the ``pytest11`` entry point, so pytest imports this module in *every* run
of an environment where patchaudit is installed: it must stay cheap and must never import
gevent or eventlet (importing them changes the process being audited). Everything heavier is
imported inside the hooks, and only once the audit is enabled (``--gevent-audit`` or the ini
option ``gevent_audit = true``).

A plugin cannot patch early enough to fix anything (pytest has imported ``socket``,
``threading``, ``subprocess``... before any plugin loads; FM-22), so this one only reports:

* the session: which patched modules pytest itself had loaded (MPA153), what the project's
  conftests and test modules imported before their own patch call (MPA151, with the chain),
  stale references after collection (MPA251), partial patching (MPA311), both frameworks
  (MPA451/452), and a process never patched while the tests use gevent (MPA314);
* each test: hub blocking longer than ``--gevent-audit-threshold`` (MPA851, with the test's
  node id), patches undone after it (MPA315, e.g. by pytest-socket), pytest-timeout's thread
  method in a patched process (MPA853).

The report is a terminal section, ``--gevent-audit-json`` (the `patchaudit --format json`
schema), and with ``--gevent-audit-strict`` a failing exit status. Under pytest-xdist each worker
audits itself and the controller prints one merged section.

Every hook is guarded: an internal error becomes one line in the report, never a failed test or
a crashed session.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._session import AuditSession, Settings

__all__: list[str] = []

_SESSION = pytest.StashKey["AuditSession"]()
_MARKER = "gevent_audit"
_MARKER_DOC = (
    "gevent_audit(allow_blocking=SECONDS, skip=False): per-test settings of --gevent-audit: "
    "allow the hub to be blocked up to SECONDS in this test, or skip=True to not audit it."
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


# -- options -----------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the options; the ini names let a project turn the audit on for everyone."""
    group = parser.getgroup("gevent-audit", "gevent/eventlet monkey-patching audit (patchaudit)")
    group.addoption(
        "--gevent-audit",
        action="store_true",
        default=None,
        dest="gevent_audit",
        help="audit monkey-patching and hub blocking while the tests run.",
    )
    group.addoption(
        "--gevent-audit-threshold",
        metavar="SECONDS",
        default=None,
        dest="gevent_audit_threshold",
        help="report a test that blocks the hub longer than this (default 0.1).",
    )
    group.addoption(
        "--gevent-audit-json",
        metavar="PATH",
        default=None,
        dest="gevent_audit_json",
        help="also write the findings as patchaudit's JSON document to PATH.",
    )
    group.addoption(
        "--gevent-audit-strict",
        action="store_true",
        default=None,
        dest="gevent_audit_strict",
        help="fail the session when the audit finds a warning or an error.",
    )
    parser.addini("gevent_audit", "turn the gevent audit on (true/false)", default="")
    parser.addini("gevent_audit_threshold", "hub-blocking threshold in seconds", default="")
    parser.addini("gevent_audit_json", "write the audit's JSON document here", default="")
    parser.addini(
        "gevent_audit_strict", "fail the session on audit warnings (true/false)", default=""
    )


def _flag(config: pytest.Config, value: object, ini: str) -> bool:
    if value is not None:
        return bool(value)
    text = str(config.getini(ini) or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise pytest.UsageError(f"{ini} = {text!r}: expected true or false")


def _settings(config: pytest.Config, ns: Any) -> Settings | None:
    """The audit's settings, or None when it is off. Bad values are usage errors."""
    if not _flag(config, getattr(ns, "gevent_audit", None), "gevent_audit"):
        return None
    from ._session import Settings

    raw = getattr(ns, "gevent_audit_threshold", None)
    source = "--gevent-audit-threshold"
    if raw is None:
        raw, source = config.getini("gevent_audit_threshold") or "0.1", "gevent_audit_threshold"
    threshold = _positive(raw, source)
    json_raw = getattr(ns, "gevent_audit_json", None) or config.getini("gevent_audit_json") or None
    json_path = None
    if json_raw:
        json_path = Path(config.invocation_params.dir, json_raw)
        if not json_path.parent.is_dir():
            raise pytest.UsageError(
                f"--gevent-audit-json {json_raw}: folder {json_path.parent} does not exist"
            )
        if json_path.is_dir():
            raise pytest.UsageError(f"--gevent-audit-json {json_raw}: is a folder, not a file")
    strict = _flag(config, getattr(ns, "gevent_audit_strict", None), "gevent_audit_strict")
    return Settings(threshold=threshold, json_path=json_path, strict=strict)


def _positive(raw: object, source: str) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise pytest.UsageError(f"{source} {raw!r}: expected a positive number of seconds")
    return value


# -- start-up ----------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Start recording before the first conftest is imported.

    This is the earliest hook that sees both the command line and the ini file, and pytest's
    own implementation (trylast) is the one that imports the conftests, so everything they
    import and patch is recorded; what is already loaded here is what pytest and its plugins
    loaded (MPA153).
    """
    _start(early_config, early_config.known_args_namespace)


def _start(config: pytest.Config, ns: Any) -> None:
    if _SESSION in config.stash:
        return
    settings = _settings(config, ns)
    if settings is None:
        return
    from ._session import AuditSession

    plugins = sorted(
        {
            module
            for module in (
                getattr(p, "__name__", None) for _, p in config.pluginmanager.list_name_plugin()
            )
            if isinstance(module, str)
            and not module.startswith("_pytest")
            and "conftest" not in module
            and module != __name__
        }
    )
    _skip_assertion_rewriting()
    try:
        audit = AuditSession(
            settings, Path(config.rootpath), Path(config.invocation_params.dir), plugins
        )
    except Exception as exc:  # never stop the user's test run: say so once and stay off
        config.issue_config_time_warning(
            pytest.PytestWarning(
                f"gevent-audit is off: internal error: {type(exc).__name__}: {exc}"
            ),
            stacklevel=2,
        )
        return
    config.stash[_SESSION] = audit


def _skip_assertion_rewriting() -> None:
    """Let patchaudit's own modules load as plain imports.

    pytest marks every module of a plugin's distribution for assertion rewriting, so the
    modules the audit imports later (the rule catalogue, the reporters) would be re-parsed and
    re-compiled by the rewriter, which ignores their installed bytecode: about 0.25 s per run
    where bytecode is not written (``PYTHONDONTWRITEBYTECODE``, common in containers). Their
    asserts are not test asserts. The mark lives in the rewriter's private state; if pytest
    changes it, this does nothing.
    """
    import sys

    for finder in sys.meta_path:
        marked = getattr(finder, "_must_rewrite", None)
        if isinstance(marked, set) and "patchaudit" in marked:
            marked.discard("patchaudit")
            cache = getattr(finder, "_marked_for_rewrite_cache", None)
            if isinstance(cache, dict):
                cache.clear()


def _audit_of(config: pytest.Config) -> AuditSession | None:
    return config.stash.get(_SESSION, None)


def _guard(config: pytest.Config, what: str, func: Callable[..., Any], *args: Any) -> Any:
    """Run audit code; an internal error is recorded as one line, never raised."""
    session = _audit_of(config)
    if session is None:
        return None
    try:
        return func(session, *args)
    except pytest.UsageError:
        raise
    except Exception as exc:  # the audit must never break the user's test run
        message = f"{what}: {type(exc).__name__}: {exc}"
        if message not in session.errors:
            session.errors.append(message)
        return None


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker always (``--strict-markers`` runs stay valid with the audit off), and
    start recording here if the plugin was registered too late for the conftest hook."""
    config.addinivalue_line("markers", _MARKER_DOC)
    _start(config, config.option)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Show the audit's settings and the patch state as pytest starts, like pytest-timeout."""
    session = _audit_of(config)
    if session is None:
        return None
    state = _guard(config, "report header", lambda s: s.describe_patch_state()) or "unknown"
    extra = " strict," if session.settings.strict else ""
    return [f"gevent-audit: {state};{extra} threshold {session.settings.threshold:g}s"]


# -- collection --------------------------------------------------------------------------------
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check every ``gevent_audit`` marker once, up front: a typo is a usage error, not a
    silently ignored setting."""
    if _audit_of(config) is None:
        return
    for item in items:
        _marker_limit(item, _audit_of(config).settings.threshold)  # type: ignore[union-attr]


def _marker_limit(item: pytest.Item, threshold: float) -> float | None:
    """The blocking limit for this test, or None when the marker says ``skip=True``."""
    marker = item.get_closest_marker(_MARKER)
    if marker is None:
        return threshold
    unknown = set(marker.kwargs) - {"allow_blocking", "skip"}
    if marker.args or unknown:
        bad = ", ".join(sorted(unknown)) or "positional arguments"
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.gevent_audit: unknown {bad}; "
            "use allow_blocking=SECONDS or skip=True"
        )
    skip = marker.kwargs.get("skip", False)
    if not isinstance(skip, bool):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.gevent_audit: skip must be a bool")
    if skip:
        return None
    if "allow_blocking" in marker.kwargs:
        allowed = marker.kwargs["allow_blocking"]
        if isinstance(allowed, bool):
            allowed = "bool"
        return _positive(allowed, f"{item.nodeid}: @pytest.mark.gevent_audit allow_blocking")
    return threshold


def pytest_collection_finish(session: pytest.Session) -> None:
    """Scan for stale references once, when every test module (and what it binds at import) is
    loaded: a scan walks the heap, far too slow to repeat per test."""
    _guard(session.config, "stale-reference scan", lambda s: s.after_collection())


# -- each test ---------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Watch the hub for the whole test (setup, call, teardown), then check that what was
    patched is still patched: teardown hooks of other plugins (pytest-socket) run inside."""
    config = item.config
    limit = None
    if _audit_of(config) is not None:
        limit = _marker_limit(item, _audit_of(config).settings.threshold)  # type: ignore[union-attr]
        _guard(config, "test start", lambda s: s.start_test(item.nodeid, limit))
    try:
        return (yield)
    finally:
        if _audit_of(config) is not None:
            _guard(config, "test end", _finish, item, limit is not None)


def _finish(session: AuditSession, item: pytest.Item, audited: bool) -> None:
    path, line, _ = item.location
    location = (str(Path(item.config.rootpath, path)), (line or 0) + 1)
    session.finish_test(item.nodeid, location, audited, item.config.pluginmanager)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Label blocking episodes with the phase they happened in (setup is the default)."""
    _guard(item.config, "phase", lambda s: s.set_phase("call"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """See :func:`pytest_runtest_call`."""
    _guard(item.config, "phase", lambda s: s.set_phase("teardown"))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """pytest-timeout is arming a timer for this test: its ``thread`` method never fires while
    the hub is blocked in a patched process (MPA853). Returns None so its own hook still runs."""
    _guard(item.config, "pytest-timeout check", _timeout, item, settings)


def _timeout(session: AuditSession, item: pytest.Item, settings: Any) -> None:
    import threading

    session.timeout_armed(
        item.nodeid,
        settings,
        _timeout_source(item),
        threading.current_thread() is threading.main_thread(),
    )


def _timeout_source(item: pytest.Item) -> tuple[str, str | None, int | None]:
    """Where the timeout method came from, most specific first (pytest-timeout's order)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and ("method" in marker.kwargs or len(marker.args) > 1):
        path, line, _ = item.location
        return "marker", str(Path(item.config.rootpath, path)), (line or 0) + 1
    config = item.config
    if getattr(config.option, "timeout_method", None):
        return "command line", None, None
    inipath = config.inipath
    if inipath is not None and config.getini("timeout_method"):
        try:
            for number, text in enumerate(inipath.read_text().splitlines(), start=1):
                if "timeout_method" in text.split("#")[0]:
                    return "configuration", str(inipath), number
        except OSError:
            pass
        return "configuration", str(inipath), None
    return "default", None, None


# -- the end -----------------------------------------------------------------------------------
@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist: keep each worker's findings for the controller's one merged report."""
    output = getattr(node, "workeroutput", None) or {}
    if "patchaudit" in output:
        _guard(node.config, "xdist merge", lambda s: s.worker_outputs.append(output["patchaudit"]))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Turn the recording into findings before the terminal summary and the exit status are
    final: a worker hands them to xdist, the controller (or a plain run) writes the JSON file
    and, in strict mode, fails a session whose tests passed."""
    config = session.config
    audit = _audit_of(config)
    if audit is None:
        return
    _guard(config, "findings", _conclude, config)
    worker = getattr(config, "workerinput", None) is not None  # the controller decides
    if audit.settings.strict and audit.findings and session.exitstatus == 0 and not worker:
        from .._findings import Severity

        if any(f.severity.rank >= Severity.WARNING.rank for f in audit.findings):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _conclude(audit: AuditSession, config: pytest.Config) -> None:
    from . import _report

    own = _report.build_findings(audit)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        audit.findings = own
        workeroutput["patchaudit"] = _report.to_wire(own, audit)
        return
    groups, states = [own], [audit.describe_patch_state(final=True)]
    for text in audit.worker_outputs:
        findings, errors, tests, state = _report.from_wire(text)
        groups.append(findings)
        audit.errors.extend(e for e in errors if e not in audit.errors)
        audit.tests += tests
        audit.workers += 1
        states.append(f"workers: {state}")
    audit.findings = _report.merge(groups)
    audit.states = states
    if audit.settings.json_path is not None:
        target = " ".join(["pytest", *config.invocation_params.args])
        _report.write_json(audit.settings.json_path, audit.findings, audit, target, states)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The audit's section, after pytest's own summary (worst first, each with its fix)."""
    audit = _audit_of(config)
    if audit is None or getattr(config, "workerinput", None) is not None:
        return
    from . import _report

    states = audit.states or [audit.describe_patch_state(final=True)]
    try:
        lines = _report.summary_lines(audit.findings or [], audit, states)
    except Exception as exc:
        lines = [f"internal error (audit incomplete): summary: {type(exc).__name__}: {exc}"]
    terminalreporter.write_sep("=", "gevent audit")
    for line in lines:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop recording: the import finder leaves ``sys.meta_path`` and the sampler thread ends
    (matters for in-process pytester runs and anything that runs after pytest.main())."""
    audit = _audit_of(config)
    if audit is not None:
        audit.close()
        del config.stash[_SESSION]
