"""Output formats: exact text for the line formats, exact structure for JSON and SARIF."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from patchaudit import Category, Finding, Report, Severity, __version__
from patchaudit.reporters import FORMATS, make_reporter
from patchaudit.reporters._common import summary_line
from patchaudit.reporters._github import escape_data, escape_property
from patchaudit.rules._model import Rule, Scope

SOURCE = "import os\nimport socket\nfrom gevent import monkey; monkey.patch_all()\nx = 1\n"
PATCH_COL = 28  # 1-based column of "monkey.patch_all()" on line 3
PATCH_END = PATCH_COL + len("monkey.patch_all()")


def _no_hits(*_args: object) -> list:
    return []


def make_rule(code: str, name: str, severity: Severity, category: Category, refs=()) -> Rule:
    return Rule(
        code=code,
        name=name,
        category=category,
        severity=severity,
        summary=f"summary of {name}",
        message="{what}",
        why=f"why {name} matters",
        fix=f"generic fix for {name}",
        bad="import socket\nfrom gevent import monkey",
        good="from gevent import monkey\nmonkey.patch_all()",
        references=refs,
        kind="file",
        scope=Scope.ALWAYS,
        check=_no_hits,
    )


RULES = {
    "PAT101": make_rule(
        "PAT101",
        "patch-after-import",
        Severity.ERROR,
        Category.PATCH_ORDER,
        ("FM-01", "FM-07", "https://github.com/gevent/gevent/issues/1016"),
    ),
    "PAT201": make_rule("PAT201", "stale-reference", Severity.WARNING, Category.STALE_REFERENCE),
    "PAT901": make_rule("PAT901", "library-patches", Severity.INFO, Category.LIBRARY_PATCHES),
}


def patch_finding(path: str = "app.py", line: int = 3, **kw) -> Finding:
    args = dict(
        rule="PAT101",
        category=Category.PATCH_ORDER,
        severity=Severity.ERROR,
        path=path,
        line=line,
        column=PATCH_COL,
        message="monkey.patch_all() runs after 'socket' was imported",
        fix="Move the patch above `import socket`.",
        evidence={"import_chain": ["app", "lib", "socket"], "module": "socket"},
        end_line=line,
        end_column=PATCH_END,
    )
    args.update(kw)
    return Finding(**args)


def stale_finding(path: str = "app.py", line: int = 1) -> Finding:
    return Finding(
        rule="PAT201",
        category=Category.STALE_REFERENCE,
        severity=Severity.WARNING,
        path=path,
        line=line,
        column=1,
        message="'os' imported before patching",
        fix="Import it after the patch.",
    )


def info_finding() -> Finding:
    return Finding(
        rule="PAT901",
        category=Category.LIBRARY_PATCHES,
        severity=Severity.INFO,
        path="pkg/lib.py",
        line=5,
        column=1,
        message="library patches itself",
        fix="",
    )


def sample_report() -> Report:
    return Report(
        target=".",
        findings=[stale_finding(), patch_finding(), info_finding()],
        errors=["broken.py: SyntaxError: invalid syntax (line 2)"],
        files_seen=4,
        files_analyzed=3,
        notes=["1 file excluded"],
    )


def render(fmt: str, report: Report, cwd: Path, *, color: bool = False) -> str:
    stream = io.StringIO()
    make_reporter(fmt, stream, color=color, rules=RULES, cwd=cwd).report(report)
    return stream.getvalue()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(SOURCE)
    return tmp_path


# --- factory -------------------------------------------------------------------------------


def test_factory_knows_every_format(tmp_path: Path) -> None:
    assert FORMATS == ("full", "concise", "json", "sarif", "github")
    for fmt in FORMATS:
        reporter = make_reporter(fmt, io.StringIO(), color=False, rules=RULES, cwd=tmp_path)
        assert callable(reporter.report)
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        make_reporter("xml", io.StringIO(), color=False, rules=RULES)


# --- concise -------------------------------------------------------------------------------


def test_concise_exact(project: Path) -> None:
    assert render("concise", sample_report(), project).splitlines() == [
        "app.py:1:1: PAT201 'os' imported before patching",
        "app.py:3:28: PAT101 monkey.patch_all() runs after 'socket' was imported",
        "pkg/lib.py:5:1: PAT901 library patches itself",
        "error: broken.py: SyntaxError: invalid syntax (line 2)",
        "Found 3 problems (1 error, 1 warning, 1 info). 1 file could not be analysed.",
    ]


def test_concise_clean_run(tmp_path: Path) -> None:
    report = Report(target=".", files_seen=12, files_analyzed=12)
    assert render("concise", report, tmp_path) == "All checks passed (12 files analysed).\n"


def test_concise_color_only_on_code(project: Path) -> None:
    report = Report(target=".", findings=[stale_finding()], files_analyzed=1)
    out = render("concise", report, project, color=True)
    assert (
        out.splitlines()[0] == "app.py:1:1: \x1b[1;33mPAT201\x1b[0m 'os' imported before patching"
    )
    assert out.splitlines()[1] == "Found 1 problem (0 errors, 1 warning, 0 info)."


def test_concise_keeps_one_line_per_finding_and_no_escapes(tmp_path: Path) -> None:
    finding = Finding(
        rule="PAT201",
        category=Category.STALE_REFERENCE,
        severity=Severity.WARNING,
        path="we\x1bird.py",
        line=2,
        column=4,
        message="line one\nline two \x1b[31mred\x00 \udcff",
        fix="",
    )
    out = render("concise", Report(target=".", findings=[finding]), tmp_path)
    assert "\x1b" not in out and "\x00" not in out
    assert out.splitlines()[0] == (
        "we\\x1bird.py:2:4: PAT201 line one\\nline two \\x1b[31mred\\x00 \\udcff"
    )


def test_concise_survives_a_narrow_stream_encoding(tmp_path: Path) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    finding = patch_finding(message="caf\u00e9 \u2603")
    make_reporter("concise", stream, color=False, rules=RULES, cwd=tmp_path).report(
        Report(target=".", findings=[finding])
    )
    assert b"caf\\xe9 \\u2603" in raw.getvalue()


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (Report(target=".", files_analyzed=1), "All checks passed (1 file analysed)."),
        (
            Report(target=".", errors=["a.py: x", "b.py: y"], files_analyzed=3),
            "No problems found (3 files analysed), but 2 files could not be analysed.",
        ),
        (
            Report(target=".", findings=[patch_finding(), patch_finding(line=4)]),
            "Found 2 problems (2 errors, 0 warnings, 0 info).",
        ),
    ],
)
def test_summary_wording(report: Report, expected: str) -> None:
    assert summary_line(report) == expected


# --- json ----------------------------------------------------------------------------------


def test_json_exact_document(project: Path) -> None:
    report = sample_report()
    out = render("json", report, project)
    assert out.endswith("}\n")
    assert out.splitlines()[1] == '  "version": 1,'  # indent=2
    assert json.loads(out) == {
        "version": 1,
        "tool": {"name": "patchaudit", "version": __version__},
        "target": ".",
        "findings": [
            {
                "rule": "PAT201",
                "category": "stale-reference",
                "severity": "warning",
                "path": "app.py",
                "line": 1,
                "column": 1,
                "end_line": None,
                "end_column": None,
                "message": "'os' imported before patching",
                "fix": "Import it after the patch.",
                "evidence": {},
                "name": "stale-reference",
                "url": "https://github.com/patchaudit/patchaudit/blob/main/docs/rules/PAT201.md",
            },
            {
                "rule": "PAT101",
                "category": "patch-order",
                "severity": "error",
                "path": "app.py",
                "line": 3,
                "column": 28,
                "end_line": 3,
                "end_column": PATCH_END,
                "message": "monkey.patch_all() runs after 'socket' was imported",
                "fix": "Move the patch above `import socket`.",
                "evidence": {"import_chain": ["app", "lib", "socket"], "module": "socket"},
                "name": "patch-after-import",
                "url": "https://github.com/patchaudit/patchaudit/blob/main/docs/rules/PAT101.md",
            },
            {
                "rule": "PAT901",
                "category": "library-patches",
                "severity": "info",
                "path": "pkg/lib.py",
                "line": 5,
                "column": 1,
                "end_line": None,
                "end_column": None,
                "message": "library patches itself",
                "fix": "",
                "evidence": {},
                "name": "library-patches",
                "url": "https://github.com/patchaudit/patchaudit/blob/main/docs/rules/PAT901.md",
            },
        ],
        "errors": ["broken.py: SyntaxError: invalid syntax (line 2)"],
        "summary": {"error": 1, "warning": 1, "info": 1},
    }


def test_json_empty_report(tmp_path: Path) -> None:
    doc = json.loads(render("json", Report(target="src"), tmp_path))
    assert doc["findings"] == [] and doc["errors"] == []
    assert doc["summary"] == {"error": 0, "warning": 0, "info": 0}
    assert doc["target"] == "src"


def test_json_never_fails_on_weird_text(tmp_path: Path) -> None:
    finding = patch_finding(
        path="odd\udcffname\x00.py",
        message='nul\x00 surrogate \udcff newline\n quote" caf\u00e9',
        evidence={"path": Path("x/y"), "codes": {"b", "a"}, "ratio": float("nan")},
    )
    out = render("json", Report(target="\udcfe", findings=[finding], errors=["\udcff"]), tmp_path)
    assert out.isascii()
    doc = json.loads(out)
    got = doc["findings"][0]
    assert got["path"] == "odd\ufffdname\x00.py"
    assert got["message"] == 'nul\x00 surrogate \ufffd newline\n quote" caf\u00e9'
    assert got["evidence"] == {"path": "x/y", "codes": ["a", "b"], "ratio": "nan"}
    assert doc["target"] == "\ufffd" and doc["errors"] == ["\ufffd"]
    # strict UTF-8 round trip: no lone surrogate escapes were emitted
    json.loads(out.encode("ascii").decode("utf-8"))
    assert "\\udc" not in out


# --- sarif ---------------------------------------------------------------------------------


def sarif(report: Report, cwd: Path) -> dict:
    return json.loads(render("sarif", report, cwd))


def test_sarif_structure(project: Path) -> None:
    log = sarif(sample_report(), project)
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    assert len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "patchaudit"
    assert driver["version"] == __version__
    assert driver["informationUri"] == "https://github.com/patchaudit/patchaudit"
    assert [r["id"] for r in driver["rules"]] == ["PAT101", "PAT201", "PAT901"]
    pat101 = driver["rules"][0]
    assert pat101 == {
        "id": "PAT101",
        "name": "patch-after-import",
        "shortDescription": {"text": "summary of patch-after-import"},
        "fullDescription": {"text": "why patch-after-import matters"},
        "help": {
            "text": "generic fix for patch-after-import\n\nBad:\nimport socket\n"
            "from gevent import monkey\n\nGood:\nfrom gevent import monkey\nmonkey.patch_all()\n",
            "markdown": pat101["help"]["markdown"],
        },
        "helpUri": "https://github.com/patchaudit/patchaudit/blob/main/docs/rules/PAT101.md",
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["patch-order", "FM-01", "FM-07"]},
    }
    assert "```python\nimport socket\nfrom gevent import monkey\n```" in pat101["help"]["markdown"]
    assert [r["defaultConfiguration"]["level"] for r in driver["rules"]] == [
        "error",
        "warning",
        "note",
    ]

    assert run["originalUriBaseIds"] == {"%SRCROOT%": {"uri": project.resolve().as_uri() + "/"}}
    assert run["invocations"] == [
        {
            "executionSuccessful": False,
            "toolExecutionNotifications": [
                {
                    "level": "error",
                    "message": {"text": "broken.py: SyntaxError: invalid syntax (line 2)"},
                },
                {"level": "note", "message": {"text": "1 file excluded"}},
            ],
        }
    ]

    results = run["results"]
    assert [(r["ruleId"], r["ruleIndex"], r["level"]) for r in results] == [
        ("PAT201", 1, "warning"),
        ("PAT101", 0, "error"),
        ("PAT901", 2, "note"),
    ]
    patch = results[1]
    assert patch["message"] == {"text": "monkey.patch_all() runs after 'socket' was imported"}
    assert patch["locations"] == [
        {
            "physicalLocation": {
                "artifactLocation": {"uri": "app.py", "uriBaseId": "%SRCROOT%"},
                "region": {
                    "startLine": 3,
                    "startColumn": PATCH_COL,
                    "endLine": 3,
                    "endColumn": PATCH_END,
                },
            }
        }
    ]
    assert results[0]["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 1,
        "startColumn": 1,
    }
    for result in results:
        fp = result["partialFingerprints"]["primaryLocationLineHash"]
        assert len(fp) == 64 and int(fp, 16) >= 0
    assert len({r["partialFingerprints"]["primaryLocationLineHash"] for r in results}) == 3


def test_sarif_clean_run_is_successful(tmp_path: Path) -> None:
    run = sarif(Report(target="."), tmp_path)["runs"][0]
    assert run["results"] == [] and run["tool"]["driver"]["rules"] == []
    assert run["invocations"] == [{"executionSuccessful": True, "toolExecutionNotifications": []}]


def test_sarif_fingerprint_survives_line_shift(project: Path) -> None:
    before = sarif(Report(target=".", findings=[patch_finding(line=3)]), project)
    (project / "app.py").write_text("\n" + SOURCE)  # a blank line above moves it to line 4
    after = sarif(Report(target=".", findings=[patch_finding(line=4)]), project)

    def fingerprint(log: dict) -> str:
        return log["runs"][0]["results"][0]["partialFingerprints"]["primaryLocationLineHash"]

    assert fingerprint(before) == fingerprint(after)
    region = after["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] == 4

    # Editing the flagged line itself is a different alert.
    (project / "app.py").write_text("\n" + SOURCE.replace("patch_all()", "patch_all(thread=False)"))
    edited = sarif(Report(target=".", findings=[patch_finding(line=4)]), project)
    assert fingerprint(edited) != fingerprint(after)


def test_sarif_fingerprint_distinguishes_identical_lines(tmp_path: Path) -> None:
    (tmp_path / "dup.py").write_text("import os\nimport os\n")
    report = Report(target=".", findings=[stale_finding("dup.py", 1), stale_finding("dup.py", 2)])
    results = sarif(report, tmp_path)["runs"][0]["results"]
    fps = [r["partialFingerprints"]["primaryLocationLineHash"] for r in results]
    assert fps[0] != fps[1]


def test_sarif_unreadable_source_falls_back_to_line_number(tmp_path: Path) -> None:
    one = sarif(Report(target=".", findings=[stale_finding("gone.py", 1)]), tmp_path)
    two = sarif(Report(target=".", findings=[stale_finding("gone.py", 2)]), tmp_path)
    fp = [
        log["runs"][0]["results"][0]["partialFingerprints"]["primaryLocationLineHash"]
        for log in (one, two)
    ]
    assert fp[0] != fp[1]


def test_sarif_weird_text_uri_and_unknown_rule(tmp_path: Path) -> None:
    unknown = Finding(
        rule="PAT999",
        category=Category.PARSE_ERROR,
        severity=Severity.ERROR,
        path="my dir/odd\udcff#.py",
        line=0,
        column=0,
        message="surrogate \udcff and nul \x00",
        fix="",
    )
    out = render("sarif", Report(target=".", findings=[unknown], errors=["bad \udcff"]), tmp_path)
    assert out.isascii()
    run = json.loads(out)["runs"][0]
    assert run["tool"]["driver"]["rules"] == [
        {
            "id": "PAT999",
            "shortDescription": {"text": "PAT999"},
            "defaultConfiguration": {"level": "error"},
            "properties": {"tags": ["parse-error"]},
        }
    ]
    result = run["results"][0]
    assert result["message"]["text"] == "surrogate \ufffd and nul \x00"
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "my%20dir/odd%FF%23.py"
    assert location["region"] == {"startLine": 1, "startColumn": 1}  # SARIF minimum is 1


def test_sarif_against_schema_subset(project: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    message = {"type": "object", "required": ["text"]}
    schema = {
        "type": "object",
        "required": ["$schema", "version", "runs"],
        "properties": {
            "version": {"const": "2.1.0"},
            "runs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["tool", "results"],
                    "properties": {
                        "results": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["ruleId", "message", "locations"],
                                "properties": {
                                    "message": message,
                                    "level": {"enum": ["none", "note", "warning", "error"]},
                                },
                            },
                        }
                    },
                },
            },
        },
    }
    jsonschema.validate(sarif(sample_report(), project), schema)


# --- github --------------------------------------------------------------------------------


def test_github_exact(project: Path) -> None:
    assert render("github", sample_report(), project).splitlines() == [
        "::warning title=patchaudit (PAT201),file=app.py,line=1,col=1::"
        "app.py:1:1: PAT201 'os' imported before patching",
        "::error title=patchaudit (PAT101),file=app.py,line=3,col=28,endLine=3,endColumn=46::"
        "app.py:3:28: PAT101 monkey.patch_all() runs after 'socket' was imported",
        "::notice title=patchaudit (PAT901),file=pkg/lib.py,line=5,col=1::"
        "pkg/lib.py:5:1: PAT901 library patches itself",
        "::error::broken.py: SyntaxError: invalid syntax (line 2)",
    ]


def test_github_escaping(tmp_path: Path) -> None:
    assert escape_data("100% a\r\nb: c, d") == "100%25 a%0D%0Ab: c, d"
    assert escape_property("100% a\nb: c, d") == "100%25 a%0Ab%3A c%2C d"
    finding = stale_finding(path="a,b:c%.py")
    finding = Finding(**{**finding.__dict__, "message": "50% done\nnext, then: stop"})
    report = Report(target=".", findings=[finding], errors=["x.py: bad\nworse 5%"])
    assert render("github", report, tmp_path).splitlines() == [
        "::warning title=patchaudit (PAT201),file=a%2Cb%3Ac%25.py,line=1,col=1::"
        "a,b:c%25.py:1:1: PAT201 50%25 done%0Anext, then: stop",
        "::error::x.py: bad%0Aworse 5%25",
    ]


def test_github_prints_nothing_for_clean_run(tmp_path: Path) -> None:
    assert render("github", Report(target="."), tmp_path) == ""


# --- full ----------------------------------------------------------------------------------


def test_full_without_color_is_plain(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Environment variables that make rich emit colour must not override color=False.
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    out = render("full", sample_report(), project)
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0] == "app.py"
    head = "error[PAT101] patch-after-import: monkey.patch_all() runs after 'socket' was imported"
    assert head in lines
    assert "  --> app.py:3:28" in lines
    # the flagged line with one line of context each side and a caret under the range
    i = lines.index(" 3 | from gevent import monkey; monkey.patch_all()")
    assert lines[i - 1] == " 2 | import socket"
    assert lines[i + 1] == "   | " + " " * (PATCH_COL - 1) + "^" * (PATCH_END - PATCH_COL)
    assert lines[i + 2] == " 4 | x = 1"
    assert "   = fix: Move the patch above `import socket`." in lines
    assert "   = see: FM-01, FM-07, docs/rules/PAT101.md" in lines
    assert "   = evidence: import chain: app -> lib -> socket" in lines
    assert "   = evidence: module: socket" in lines
    # a finding without its own fix text falls back to the rule's fix
    assert "   = fix: generic fix for library-patches" in lines
    # pkg/lib.py does not exist: no snippet, but the finding is still shown
    assert "  --> pkg/lib.py:5:1" in lines
    assert "  error: broken.py: SyntaxError: invalid syntax (line 2)" in lines
    assert "note: 1 file excluded" in lines
    assert lines[-1] == summary_line(sample_report())
    assert lines[-1].startswith("Found 3 problems (1 error, 1 warning, 1 info).")
    assert all(len(line) <= 100 for line in lines)
    # summary table: one row per rule with per-severity counts, then totals
    rows = [
        [cell for cell in line.split() if cell not in ("\u2502", "|")]
        for line in lines
        if line.startswith(("PAT", "Total"))
    ]
    assert [row[0] for row in rows] == ["PAT101", "PAT201", "PAT901", "Total"]
    assert rows[-1][-4:] == ["1", "1", "1", "3"]


def test_full_caret_with_tabs_and_wide_chars(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text("x = 1\n\tname = '\u4e2d'; import socket\n")
    finding = stale_finding("t.py", 2)
    col = "\tname = '\u4e2d'; ".__len__() + 1
    finding = Finding(**{**finding.__dict__, "column": col, "end_column": col + 6})
    lines = render("full", Report(target=".", findings=[finding]), tmp_path).splitlines()
    i = lines.index(" 2 |     name = '\u4e2d'; import socket")
    # tab -> 4 columns, the CJK character takes 2 cells
    assert lines[i + 1] == "   | " + " " * (4 + len("name = '") + 2 + len("'; ")) + "^" * 6


def test_full_color_and_clean_run(project: Path) -> None:
    colored = render("full", sample_report(), project, color=True)
    assert "\x1b[" in colored
    clean = render("full", Report(target=".", files_analyzed=2), project)
    assert clean == "All checks passed (2 files analysed).\n"


def test_full_escapes_control_characters(tmp_path: Path) -> None:
    finding = Finding(**{**stale_finding().__dict__, "message": "evil \x1b[2J \udcff"})
    out = render("full", Report(target=".", findings=[finding]), tmp_path)
    assert "\x1b" not in out
    assert "evil \\x1b[2J \\udcff" in out
