"""`patchaudit matrix` and docs/patch-matrix.md, against the real installed gevent.

No mocks: the patched/removed lists come from the probe running ``patch_all()`` in a child
interpreter, and every gevent API named in ``data/not_covered.toml`` is resolved in a child
interpreter with the installed gevent.
"""

from __future__ import annotations

import difflib
import io
import json
import platform
import re
import select
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from patchaudit._gevent_patches import PatchLists, load_patch_lists
from patchaudit._matrix import (
    DOCS_PATH,
    FORMATS,
    REGENERATE,
    build_matrix,
    load_not_covered,
    main_matrix,
    parse_header,
    render,
    write,
)
from patchaudit.rules import REGISTRY

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / DOCS_PATH
KNOWLEDGE_BASES = (
    REPO.parent / "shared" / "knowledge" / "failure-modes.md",
    Path("/work/shared/knowledge/failure-modes.md"),
)
ANSI = re.compile(r"\x1b\[")
# A gevent API as written in the data file: dotted names, optionally with `()` calls inside
# (`gevent.get_hub().threadpool.apply`); an argument list ends it.
GEVENT_API = re.compile(r"gevent\.[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\(\)(?=\.))*(?:\(\))?")

# Runs in a child with the installed gevent: `a.b().c` imports `a`, calls `b`, reads `c`; a
# trailing `()` is not called (`gevent.monkey.patch_all()` must not patch anything).
_RESOLVE = r"""
import importlib, json, sys

def resolve(path):
    pieces = path.removesuffix("()").split("().")
    obj = None
    for i, piece in enumerate(pieces):
        names = piece.split(".")
        if i == 0:
            for cut in range(len(names), 0, -1):
                try:
                    obj = importlib.import_module(".".join(names[:cut]))
                    break
                except ImportError:
                    continue
            names = names[cut:]
        else:
            obj = obj()
        for name in names:
            obj = getattr(obj, name)
    return obj

bad = {}
for api in json.loads(sys.argv[1]):
    try:
        resolve(api)
    except Exception as exc:
        bad[api] = f"{type(exc).__name__}: {exc}"
print(json.dumps(bad))
"""


@pytest.fixture(scope="module")
def lists() -> PatchLists:
    return load_patch_lists()


@pytest.fixture(scope="module")
def matrix(lists: PatchLists) -> dict[str, Any]:
    return build_matrix(lists)


def _patched(matrix: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["module"], r["name"]): r for r in matrix["patched"]}


# --- (a) the generated document is in sync with the installed gevent --------------------------


def test_docs_match_installed_gevent(matrix: dict[str, Any]) -> None:
    text = DOC.read_text(encoding="utf-8")
    header = parse_header(text)
    assert header is not None, f"{DOCS_PATH} has no 'Generated from' line; run `{REGENERATE}`"
    if header["gevent"] != matrix["gevent_version"]:
        pytest.fail(
            f"{DOCS_PATH} was generated from gevent {header['gevent']} but gevent "
            f"{matrix['gevent_version']} is installed: run `{REGENERATE}` from the repository "
            "root and commit the result"
        )
    here = (matrix["implementation"], ".".join(matrix["python_version"].split(".")[:2]))
    there = (header["implementation"], header["python"])
    if here != there or header["platform"] != matrix["platform"]:
        pytest.skip(
            f"{DOCS_PATH} describes {' '.join(there)} on {header['platform']}; this is "
            f"{' '.join(here)} on {matrix['platform']}, where gevent patches other names"
        )
    expected = render(matrix, "md")
    if text != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    text.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    str(DOCS_PATH),
                    "generated",
                )
            )[:40]
        )
        pytest.fail(f"{DOCS_PATH} is out of date: run `{REGENERATE}`\n{diff}")


def test_write_produces_the_rendered_document(lists: PatchLists, tmp_path: Path) -> None:
    written = write(tmp_path / "docs" / "patch-matrix.md", lists)
    assert written.read_text(encoding="utf-8") == render(build_matrix(lists), "md")


def test_regenerate_check_command_agrees_with_the_test(tmp_path: Path) -> None:
    target = tmp_path / "m.md"
    cmd = [sys.executable, "-m", "patchaudit._matrix"]
    stale = subprocess.run([*cmd, "--check", str(target)], capture_output=True, text=True)
    assert stale.returncode == 1 and REGENERATE in stale.stderr
    assert subprocess.run([*cmd, str(target)], capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check", str(target)], capture_output=True).returncode == 0


# --- (b) facts read from the real gevent ------------------------------------------------------


def test_versions_are_the_installed_ones(matrix: dict[str, Any]) -> None:
    assert matrix["gevent_version"] == metadata.version("gevent")
    assert matrix["python_version"] == platform.python_version()


def test_time_sleep_replaced_by_hub_sleep(matrix: dict[str, Any]) -> None:
    row = _patched(matrix)[("time", "sleep")]
    assert row["option"] == "time"
    assert row["default"] is True
    assert row["replacement"] == "gevent.hub.sleep"


def test_socket_socket_under_socket(matrix: dict[str, Any]) -> None:
    row = _patched(matrix)[("socket", "socket")]
    assert row["option"] == "socket"
    assert row["replacement"].startswith("gevent.")


def test_dns_names_are_listed_once_under_dns(matrix: dict[str, Any]) -> None:
    assert _patched(matrix)[("socket", "getaddrinfo")]["option"] == "dns"
    dns = next(o for o in matrix["options"] if o["option"] == "dns")
    assert dns["within"] == "socket"
    pairs = [(r["module"], r["name"]) for r in matrix["patched"]]
    assert len(pairs) == len(set(pairs)), "a name is listed under two options"


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="select.epoll exists only on Linux")
def test_epoll_is_removed_not_replaced(matrix: dict[str, Any]) -> None:
    assert {"option": "select", "module": "select", "name": "epoll"} in matrix["removed"]
    assert ("select", "epoll") not in _patched(matrix)


def test_options_follow_patch_all_order(matrix: dict[str, Any], lists: PatchLists) -> None:
    order = [o["option"] for o in matrix["options"]]
    assert sorted(order) == sorted(set(lists.options) | set(lists.by_option))
    ran = [o for o in order if o in lists.by_option]
    assert order[: len(ran)] == ran, "options whose patcher ran come first"
    # The order gevent documents for patch_all (failure-modes.md 1.1).
    assert ran.index("os") < ran.index("thread") < ran.index("time") < ran.index("socket")
    assert ran.index("socket") < ran.index("dns") < ran.index("select") < ran.index("ssl")
    by_option = [r["option"] for r in matrix["patched"]]
    assert by_option == sorted(by_option, key=order.index)


def test_names_sorted_within_each_option(matrix: dict[str, Any]) -> None:
    groups: dict[str, list[tuple[str, str]]] = {}
    for r in matrix["patched"]:
        groups.setdefault(r["option"], []).append((r["module"], r["name"]))
    for option, names in groups.items():
        assert names == sorted(names), option


def test_output_does_not_depend_on_dict_order(lists: PatchLists) -> None:
    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse(v) for k, v in reversed(list(value.items()))}
        return value

    shuffled = PatchLists.from_json(reverse(lists.to_json()))
    for fmt in FORMATS:
        assert render(build_matrix(shuffled), fmt) == render(build_matrix(lists), fmt)


# --- (c) the "not covered" data file only names things that exist -----------------------------


def _gevent_apis() -> list[str]:
    found = set()
    for entry in load_not_covered():
        texts = [*entry["use_instead"], *re.findall(r"`([^`]+)`", entry["note"])]
        for text in texts:
            found.update(m.group() for m in GEVENT_API.finditer(text) if m.start() == 0)
    return sorted(found)


def test_gevent_apis_in_not_covered_exist_in_installed_gevent() -> None:
    apis = _gevent_apis()
    for expected in ("gevent.signal_handler", "gevent.os.nb_read", "gevent.get_hub().threadpool"):
        assert any(a.startswith(expected) for a in apis), expected
    proc = subprocess.run(
        [sys.executable, "-c", _RESOLVE, json.dumps(apis)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}, "gevent APIs that the installed gevent lacks"


def test_rule_codes_exist_and_share_the_failure_mode() -> None:
    for entry in load_not_covered():
        for code in entry["rules"]:
            assert code in REGISTRY, f"{entry['what']}: unknown rule {code}"
            rule_fms = REGISTRY[code].failure_modes
            assert entry["failure_mode"] in rule_fms, f"{code} is about {rule_fms}"


def test_failure_modes_exist_in_the_knowledge_base() -> None:
    entries = load_not_covered()
    assert all(re.fullmatch(r"FM-\d{2}", e["failure_mode"]) for e in entries)
    kb = next((p for p in KNOWLEDGE_BASES if p.is_file()), None)
    if kb is None:
        pytest.skip("the failure-mode knowledge base is not readable here")
    headings = set(re.findall(r"^### (FM-\d{2}):", kb.read_text(encoding="utf-8"), re.M))
    missing = sorted({e["failure_mode"] for e in entries} - headings)
    assert not missing, f"not in {kb}: {missing}"


def test_not_covered_is_in_the_matrix_in_file_order(matrix: dict[str, Any]) -> None:
    assert matrix["not_covered"] == load_not_covered()
    whats = " ".join(e["what"] for e in matrix["not_covered"])
    for topic in ("SIGCHLD", "os.read", "flock", "multiprocessing", "psycopg2", "grpcio", "pyzmq"):
        assert topic in whats


# --- (d) json ---------------------------------------------------------------------------------


def test_json_output_parses_with_the_documented_keys(matrix: dict[str, Any]) -> None:
    data = json.loads(render(matrix, "json"))
    assert {"gevent_version", "python_version", "patched", "removed", "not_covered"} <= set(data)
    assert all(
        set(r) == {"option", "default", "module", "name", "replacement"} for r in data["patched"]
    )
    assert all(set(r) == {"option", "module", "name"} for r in data["removed"])
    assert all(
        set(e) == {"what", "use_instead", "note", "failure_mode", "rules"}
        for e in data["not_covered"]
    )
    assert data == json.loads(json.dumps(matrix))


def test_main_matrix_writes_json(lists: PatchLists) -> None:
    out = io.StringIO()
    assert main_matrix("json", False, out) == 0
    assert json.loads(out.getvalue())["gevent_version"] == lists.gevent_version


def test_main_matrix_rejects_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_matrix("yaml", False, io.StringIO()) == 2
    assert "unknown format" in capsys.readouterr().err
    with pytest.raises(ValueError):
        render({}, "yaml")


# --- (e) table --------------------------------------------------------------------------------


def test_table_without_color_has_no_ansi(
    matrix: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # the caller's choice wins over the environment
    plain = render(matrix, "table", color=False)
    assert not ANSI.search(plain)
    assert "time.sleep" in plain and "gevent.hub.sleep" in plain
    assert "Not covered by monkey-patching" in plain
    out = io.StringIO()
    assert main_matrix("table", False, out) == 0
    assert not ANSI.search(out.getvalue())
    assert ANSI.search(render(matrix, "table", color=True))


def test_table_fits_the_width_and_ascii_streams(matrix: dict[str, Any]) -> None:
    text = render(matrix, "table", width=80, encoding="ascii")
    text.encode("ascii")
    assert max(len(line) for line in text.splitlines()) <= 80


# --- md structure -----------------------------------------------------------------------------


def test_markdown_sections(matrix: dict[str, Any]) -> None:
    md = render(matrix, "md")
    assert md.startswith("# ")
    assert parse_header(md)["gevent"] == matrix["gevent_version"]
    for option in (o for o in matrix["options"] if o["ran"]):
        assert f"### `{option['option']}={option['default']}`" in md
    assert "## Removed by aggressive patching" in md
    assert "| what | use instead | failure mode | detected by |" in md
    assert "| `time` | `sleep` | `gevent.hub.sleep` |" in md
    assert "\n\n\n" not in md
