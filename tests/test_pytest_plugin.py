"""The pytest plugin (`pytest --gevent-audit`), end to end in real pytest subprocesses.

Monkey-patching cannot be undone, so every suite runs in its own interpreter
(``pytester.runpytest_subprocess``, or ``pytester.run`` for the gevent launcher). Thresholds are
a few times the default and blocks a few times the threshold, so a loaded CI machine does not
turn scheduling delays into findings.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from typing import Any

import pytest

from patchaudit._findings import Category, Finding, Severity

from .conftest import require

pytest_plugins = ["pytester"]

# hypothesis' plugin costs about a second per run and is irrelevant here.
QUIET = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")
AUDIT = (*QUIET, "--gevent-audit", "--gevent-audit-threshold=0.2", "--gevent-audit-json=audit.json")

PATCH_CONFTEST = """
from gevent import monkey

monkey.patch_all()
"""

BLOCKING_SUITE = """
import time

import gevent


def test_blocking():
    from gevent.monkey import get_original

    gevent.sleep(0)
    get_original("time", "sleep")(0.7)


def test_cooperative():
    for _ in range(40):
        gevent.sleep(0.01)


def test_long_but_yielding():
    time.sleep(0.8)
"""


def audit(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = pytester.runpytest_subprocess(*AUDIT, *args)
    report_path = pytester.path / "audit.json"
    assert report_path.exists(), str(result.stdout) + str(result.stderr)
    return result, json.loads(report_path.read_text())


def codes(report: dict[str, Any]) -> list[str]:
    return sorted(f["rule"] for f in report["findings"])


def test_only_the_blocking_test_is_reported_with_its_nodeid_and_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(PATCH_CONFTEST)
    pytester.makepyfile(test_io=BLOCKING_SUITE)
    result, report = audit(pytester, "-p", "no:socket")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    blocked = [f for f in report["findings"] if f["rule"] == "MPA851"]
    assert len(blocked) == 1, report["findings"]
    finding = blocked[0]
    assert finding["test"] == "test_io.py::test_blocking"
    assert (finding["path"], finding["line"]) == ("test_io.py", 10)
    assert finding["category"] == "blocking-call" and finding["severity"] == "error"
    assert 0.4 < finding["evidence"]["blocked_s"] < 5
    assert finding["evidence"]["blocked_stack"][-1].startswith("test_io.py:10 in test_blocking")
    # session findings carry no test; INFO about what pytest loaded first
    assert all("test" not in f for f in report["findings"] if f["rule"] != "MPA851")
    assert "MPA153" in codes(report)
    result.stdout.fnmatch_lines(
        [
            "*gevent-audit: patched by gevent patch_all() at conftest.py:3*",
            "*= gevent audit =*",
            "ERROR MPA851 test_io.py:10: the hub was blocked for more than 0.* during test "
            "`test_io.py::test_blocking`, in `test_blocking`",
            '    at test_io.py:10 in test_blocking: get_original("time", "sleep")(0.7)',
            "    fix: Make the call cooperative*",
            "INFO MPA153 conftest.py:3: pytest and its plugins had loaded*",
            "1 error, 0 warnings, 1 info; patched by gevent patch_all() at conftest.py:3*",
        ]
    )


def test_conftest_importing_before_its_patch_is_patch_order_with_the_chain(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("import urllib.request\n" + PATCH_CONFTEST)
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result, report = audit(pytester, "-p", "no:socket")
    assert result.ret == 0
    order = [f for f in report["findings"] if f["rule"] == "MPA151"]
    assert len(order) == 1, report["findings"]
    assert order[0]["category"] == "patch-order"
    assert (order[0]["path"], order[0]["line"]) == ("conftest.py", 1)
    assert order[0]["evidence"]["import_chain"][:2] == ["conftest", "urllib.request"]
    assert order[0]["evidence"]["import_chain"][-1] == "ssl"
    assert "via conftest -> urllib.request ->" in order[0]["message"]


def test_a_suite_without_gevent_gets_one_info_line_and_gevent_is_never_imported(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_nothing_imported_gevent():
            assert "gevent" not in sys.modules and "eventlet" not in sys.modules
        """
    )
    result, report = audit(pytester)
    result.assert_outcomes(passed=1)
    assert report["findings"] == [] and report["errors"] == []
    result.stdout.fnmatch_lines(
        [
            "*= gevent audit =*",
            "no gevent or eventlet in this test run: nothing to audit",
        ]
    )


@pytest.mark.slow  # several pytest runs
def test_strict_mode_fails_a_passing_session_only_for_warnings_and_errors(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(PATCH_CONFTEST)
    pytester.makepyfile(test_io=BLOCKING_SUITE)
    strict, _ = audit(pytester, "-p", "no:socket", "--gevent-audit-strict")
    strict.assert_outcomes(passed=3)  # test outcomes are untouched
    assert strict.ret == 1
    # only INFO (MPA153) left once the blocking test is excluded: strict passes
    info_only, report = audit(
        pytester, "-p", "no:socket", "--gevent-audit-strict", "-k", "not test_blocking"
    )
    assert codes(report) == ["MPA153"] and info_only.ret == 0
    # a failing test stays a failure, with or without strict
    pytester.makepyfile(test_fail="def test_fail():\n    assert False\n")
    failing, _ = audit(pytester, "-p", "no:socket", "--gevent-audit-strict")
    assert failing.ret == 1


def test_marker_allows_longer_blocks_or_skips_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PATCH_CONFTEST)
    pytester.makepyfile(
        test_marked="""
        import gevent
        import pytest
        from gevent.monkey import get_original


        def block(seconds):
            gevent.sleep(0)
            get_original("time", "sleep")(seconds)


        @pytest.mark.gevent_audit(allow_blocking=2.0)
        def test_allowed():
            block(0.6)


        @pytest.mark.gevent_audit(allow_blocking=0.3)
        def test_over_its_allowance():
            block(0.8)


        @pytest.mark.gevent_audit(skip=True)
        def test_skipped():
            block(0.6)
        """
    )
    result, report = audit(pytester, "-p", "no:socket", "--strict-markers")
    result.assert_outcomes(passed=3)
    blocked = [(f["test"], f["line"]) for f in report["findings"] if f["rule"] == "MPA851"]
    assert blocked == [("test_marked.py::test_over_its_allowance", 8)]
    assert report["findings"][0]["evidence"]["threshold_s"] == 0.2


def test_a_bad_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.gevent_audit(allow_blocking="soon")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest_subprocess(*QUIET, "--gevent-audit")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*allow_blocking 'soon': expected a positive number*"])


def test_xdist_workers_audit_themselves_and_the_controller_merges(
    pytester: pytest.Pytester,
) -> None:
    require("xdist")
    # Not patched: patching inside xdist workers breaks execnet (FM-22), and a launcher only
    # patches the controller -- MPA314 says so, once, from every worker's identical finding.
    block = """
        import gevent
        import time

        def test_{name}():
            gevent.sleep(0)
            time.sleep(0.6)

        def test_{name}_fine():
            gevent.sleep(0.01)
        """
    pytester.makepyfile(test_one=block.format(name="one"), test_two=block.format(name="two"))
    result, report = audit(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    assert result.ret == 0
    blocked = sorted(f["test"] for f in report["findings"] if f["rule"] == "MPA851")
    assert blocked == ["test_one.py::test_one", "test_two.py::test_two"]
    assert codes(report).count("MPA314") == 1
    assert report["timeline"]["workers"] == 2 and report["timeline"]["tests"] == 4
    assert str(result.stdout).count("= gevent audit =") == 1
    result.stdout.fnmatch_lines(["*workers: not patched (gevent imported)*"])


def test_pytest_socket_undoing_the_socket_patch_is_reported_with_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    require("pytest_socket")
    pytester.makeconftest(PATCH_CONFTEST)
    pytester.makepyfile(
        test_sock="""
        import socket

        def test_a():
            socket.socket().close()

        def test_b():
            socket.socket().close()
        """
    )
    result, report = audit(pytester)
    result.assert_outcomes(passed=2)
    undone = [f for f in report["findings"] if f["rule"] == "MPA315"]
    assert len(undone) == 1, report["findings"]
    assert "`socket.socket` was set back" in undone[0]["message"]
    assert "pytest plugin `pytest_socket`" in undone[0]["message"]
    assert undone[0]["evidence"]["first_test"] == "test_sock.py::test_a"
    assert {"module": "pytest_socket", "name": "_true_socket"}.items() <= next(
        h for h in undone[0]["evidence"]["holders"] if h["plugin"]
    ).items()
    assert (undone[0]["path"], undone[0]["line"]) == ("conftest.py", 3)


def test_pytest_timeout_thread_method_in_a_patched_process_is_a_warning(
    pytester: pytest.Pytester,
) -> None:
    require("pytest_timeout")
    pytester.makeconftest(PATCH_CONFTEST)
    pytester.makepyfile(test_t="def test_t():\n    pass\n")
    result, report = audit(pytester, "-p", "no:socket", "--timeout=30", "--timeout-method=thread")
    assert result.ret == 0
    found = [f for f in report["findings"] if f["rule"] == "MPA853"]
    assert [(f["path"], f["severity"]) for f in found] == [("<command line>", "warning")]
    # the signal method is fine
    _, report = audit(pytester, "-p", "no:socket", "--timeout=30", "--timeout-method=signal")
    assert "MPA853" not in codes(report)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--gevent-audit-threshold=soon",),
            "*--gevent-audit-threshold 'soon': expected a positive number of seconds*",
        ),
        (("--gevent-audit-threshold=-1",), "*--gevent-audit-threshold '-1': expected a positive*"),
        (
            ("--gevent-audit-json=missing/audit.json",),
            "*--gevent-audit-json missing/audit.json: folder * does not exist*",
        ),
        (("-o", "gevent_audit=maybe"), "*gevent_audit = 'maybe': expected true or false*"),
    ],
    ids=["threshold-text", "threshold-negative", "json-folder", "ini-value"],
)
def test_bad_input_is_a_usage_error(
    pytester: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    enable = () if args[0] == "-o" else ("--gevent-audit",)
    result = pytester.runpytest_subprocess(*QUIET, *enable, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in str(result.stderr)


CHECK_IDLE = """
import sys

def test_plugin_is_idle():
    assert "gevent" not in sys.modules and "eventlet" not in sys.modules
    assert not [f for f in sys.meta_path if type(f).__name__ == "_ImportRecorder"]
    assert "patchaudit.rules" not in sys.modules and "rich" not in sys.modules
    assert ("patchaudit.pytest_plugin" in sys.modules) == {loaded}
"""


def test_the_plugin_does_nothing_unless_enabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_idle=CHECK_IDLE.format(loaded=True))
    result = pytester.runpytest_subprocess(*QUIET, "--strict-markers")
    result.assert_outcomes(passed=1)
    assert "gevent audit" not in str(result.stdout)
    assert "gevent-audit" not in str(result.stdout)


def test_p_no_patchaudit_disables_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_idle=CHECK_IDLE.format(loaded=False))
    result = pytester.runpytest_subprocess(*QUIET, "-p", "no:patchaudit")
    result.assert_outcomes(passed=1)
    refused = pytester.runpytest_subprocess(*QUIET, "-p", "no:patchaudit", "--gevent-audit")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR


def test_ini_option_enables_the_audit(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngevent_audit = true\ngevent_audit_threshold = 0.2\n")
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess(*QUIET)
    header = "gevent-audit: not patched yet; threshold 0.2s"
    result.stdout.fnmatch_lines([header, "*= gevent audit =*"])


def test_an_internal_error_is_one_line_and_never_fails_the_session(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("""
        from patchaudit.pytest_plugin import _session

        def broken(self):
            raise RuntimeError("boom")

        _session.AuditSession.after_collection = broken
        """)
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result, report = audit(pytester, "--gevent-audit-strict")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    assert report["errors"] == ["stale-reference scan: RuntimeError: boom"]
    result.stdout.fnmatch_lines(
        [
            "internal error (audit incomplete): stale-reference scan: RuntimeError: boom",
        ]
    )


# -- the JSON document has patchaudit's schema --------------------------------------------------
FINDING_SCHEMA = {
    "type": "object",
    "required": [
        "rule",
        "category",
        "severity",
        "path",
        "line",
        "column",
        "message",
        "fix",
        "evidence",
        "name",
        "url",
        "end_line",
        "end_column",
    ],
    "additionalProperties": False,
    "properties": {
        "rule": {"type": "string", "pattern": r"^MPA\d{3}$"},
        "category": {"enum": [c.value for c in Category]},
        "severity": {"enum": [s.value for s in Severity]},
        "path": {"type": "string"},
        "line": {"type": "integer", "minimum": 1},
        "column": {"type": "integer", "minimum": 1},
        "message": {"type": "string"},
        "fix": {"type": "string"},
        "evidence": {"type": "object"},
        "test": {"type": "string"},
        "name": {"type": "string"},
        "url": {"type": "string", "pattern": r"^https://.*/docs/rules/MPA\d{3}\.md$"},
        "end_line": {},  # an integer, or null when the rule knows only where it starts
        "end_column": {},
    },
}
DOCUMENT_SCHEMA = {
    "type": "object",
    "required": ["version", "tool", "target", "findings", "errors", "summary"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "tool": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {"name": {"const": "patchaudit"}, "version": {"type": "string"}},
        },
        "target": {"type": "string"},
        "findings": {"type": "array", "items": FINDING_SCHEMA},
        "errors": {"type": "array", "items": {"type": "string"}},
        "summary": {
            "type": "object",
            "required": ["error", "warning", "info"],
            "additionalProperties": False,
            "properties": {k: {"type": "integer"} for k in ("error", "warning", "info")},
        },
        "timeline": {"type": "object"},
    },
}
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float)}


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """The subset of JSON Schema used above (jsonschema is not a dependency)."""
    if "type" in schema:
        assert isinstance(value, _TYPES[schema["type"]]) and not isinstance(value, bool), where
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema:
        assert value in schema["enum"], where
    if "pattern" in schema:
        import re

        assert re.search(schema["pattern"], value), where
    if "minimum" in schema:
        assert value >= schema["minimum"], where
    if isinstance(value, dict):
        assert set(schema.get("required", ())) <= set(value), (where, sorted(value))
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(schema.get("properties", {})), (where, sorted(value))
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{index}]")


def test_json_file_has_the_patchaudit_schema(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import urllib.request\n" + PATCH_CONFTEST)
    pytester.makepyfile(test_io=BLOCKING_SUITE)
    _, report = audit(pytester, "-p", "no:socket")
    validate(report, DOCUMENT_SCHEMA)
    if importlib.util.find_spec("jsonschema") is not None:  # the real validator, when present
        import jsonschema

        jsonschema.validate(report, DOCUMENT_SCHEMA)
    assert report["summary"] == {
        s: sum(f["severity"] == s for f in report["findings"]) for s in ("error", "warning", "info")
    }
    # a finding read back is the same Finding (the `test` field round-trips, only when set)
    for data in report["findings"]:
        finding = Finding(
            rule=data["rule"],
            category=Category(data["category"]),
            severity=Severity(data["severity"]),
            path=data["path"],
            line=data["line"],
            column=data["column"],
            message=data["message"],
            fix=data["fix"],
            evidence=data["evidence"],
            end_line=data["end_line"],
            end_column=data["end_column"],
            test=data.get("test"),
        )
        # the report adds the rule's name and docs page, which the rule table gives
        assert finding.to_json() == {k: v for k, v in data.items() if k not in ("name", "url")}
    timeline = report["timeline"]
    assert timeline["runner"] == "pytest" and timeline["tests"] == 3
    assert math.isclose(timeline["threshold_s"], 0.2)
    assert sys.version.startswith(timeline["python"])
