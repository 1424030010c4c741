"""The per-file analysis never raises: generated programs, mutated real source, random bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, require

require("hypothesis", "hypothesmith")

import hypothesmith  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from patchaudit.static._summary import summarize  # noqa: E402

pytestmark = pytest.mark.slow  # hundreds of generated programs

FIXTURE_SOURCES = sorted(p.read_bytes() for p in (FIXTURES / "rules").rglob("*.py"))
STDLIB_SAMPLES = [
    Path(m.__file__).read_bytes() for m in (sys.modules["ast"], sys.modules["pathlib"])
]
REAL_SOURCES = FIXTURE_SOURCES + STDLIB_SAMPLES
GEVENT_HEADER = (
    b"from gevent import monkey\nmonkey.patch_all()\nimport signal, queue, multiprocessing\n"
)


def _assert_clean(data: bytes) -> None:
    summary = summarize("fuzz.py", "fuzz", False, data)
    assert summary.internal_error is None, summary.internal_error


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(hypothesmith.from_grammar())
def test_generated_programs(source: str) -> None:
    _assert_clean(source.encode("utf-8", "surrogatepass"))
    _assert_clean(GEVENT_HEADER + source.encode("utf-8", "surrogatepass"))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(hypothesmith.from_node())
def test_generated_syntax_trees(source: str) -> None:
    _assert_clean(GEVENT_HEADER + source.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(REAL_SOURCES),
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 40), st.binary(max_size=12)), max_size=6
    ),
)
def test_mutated_real_sources(source: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(source)
    for position, length, replacement in edits:
        at = position % (len(data) + 1)
        data[at : at + length] = replacement
    _assert_clean(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _assert_clean(GEVENT_HEADER + data)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(hypothesmith.from_grammar())
def test_whole_project_analysis_on_generated_module(tmp_path_factory, source: str) -> None:
    from patchaudit import check, load_config
    from patchaudit.rules import REGISTRY

    project = tmp_path_factory.mktemp("fuzz-project")
    (project / "pyproject.toml").write_text("[tool.patchaudit]\n")
    (project / "generated.py").write_bytes(source.encode("utf-8", "surrogatepass"))
    (project / "main.py").write_text(
        "import generated\nfrom gevent import monkey\nmonkey.patch_all()\n"
    )
    config = load_config([project], REGISTRY.keys())
    report = check([project], config, cwd=project, jobs=1)
    assert not [e for e in report.errors if "internal error" in e], report.errors
