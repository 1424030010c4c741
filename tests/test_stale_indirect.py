"""Indirect stale references: default values, partials, containers and objects made at import.

Each case is a small project in ``tmp_path``, checked with every rule; the test compares the
exact (code, path, line) list of the stale-reference findings (MPA2xx) and of MPA106, so a form
reported twice, or by the wrong rule, fails too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchaudit._config import load_config
from patchaudit.rules import REGISTRY
from patchaudit.static import check

PATCH = "from gevent import monkey\nmonkey.patch_all()\n"


def _findings(tmp_path: Path, files: dict[str, str]) -> list[tuple[str, str, int]]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.patchaudit]\n")
    for name, text in files.items():
        (project / name).write_text(text)
    config = load_config([project], REGISTRY.keys(), config_file=None)
    report = check([project], config, cwd=project, use_cache=True, jobs=1)
    assert not [e for e in report.errors if "internal error" in e], report.errors
    return sorted(
        (f.rule, f.path, f.line)
        for f in report.findings
        if f.rule.startswith("MPA2") or f.rule == "MPA106"
    )


HELPERS = "import time\n\n\ndef retry(fn, sleep=time.sleep):\n    return fn\n"


def test_default_in_a_helper_imported_before_the_patch(tmp_path: Path) -> None:
    files = {"helpers.py": HELPERS, "wsgi.py": "import helpers\n" + PATCH}
    assert _findings(tmp_path, files) == [("MPA201", "helpers.py", 4)]


def test_default_in_a_helper_imported_after_the_patch(tmp_path: Path) -> None:
    files = {"helpers.py": HELPERS, "wsgi.py": PATCH + "import helpers\n"}
    assert _findings(tmp_path, files) == []


# (form, module body, expected (code, line) in app.py when the body runs before the patch)
FORMS = [
    (
        "partial",
        "from functools import partial\nimport time\nnap = partial(time.sleep, 0.1)\n",
        [("MPA201", 3)],
    ),
    (
        "dict-of-callables",
        "import select\nimport time\nHANDLERS = {'sleep': time.sleep, 'select': select.select}\n",
        [("MPA201", 3), ("MPA201", 3)],  # one per element
    ),
    (
        "nested-containers",
        "import time\nSTEPS = [dict(nap=time.sleep), (time.sleep,)]\n",
        [("MPA201", 2), ("MPA201", 2)],
    ),
    (
        "lambda-and-keyword-only-defaults",
        "import threading\nimport time\n"
        "pause = lambda s=time.sleep: s\n"
        "def f(*, lock=threading.Lock()):\n    return lock\n",
        [("MPA201", 3), ("MPA204", 4)],
    ),
    ("default-selector", "import selectors\nsel = selectors.DefaultSelector()\n", [("MPA204", 2)]),
    ("thread-local", "import threading\nstate = threading.local()\n", [("MPA204", 2)]),
    (
        "class-body",
        "import queue\nimport time\n"
        "class Pool:\n"
        "    jobs = queue.Queue()\n"
        "    def wait(self, sleep=time.sleep):\n        return sleep\n",
        [("MPA201", 5), ("MPA204", 4)],
    ),
    (
        "thread-pool-stays-MPA106",
        "from concurrent.futures import ThreadPoolExecutor\npool = ThreadPoolExecutor(2)\n",
        [("MPA106", 2)],
    ),
]


@pytest.mark.parametrize(("body", "expected"), [f[1:] for f in FORMS], ids=[f[0] for f in FORMS])
def test_form_before_the_patch(tmp_path: Path, body: str, expected: list) -> None:
    found = _findings(tmp_path, {"app.py": body + PATCH})
    assert found == sorted((code, "app.py", line) for code, line in expected)


@pytest.mark.parametrize("body", [f[1] for f in FORMS], ids=[f[0] for f in FORMS])
def test_form_after_the_patch(tmp_path: Path, body: str) -> None:
    assert _findings(tmp_path, {"app.py": PATCH + body}) == []


NOT_A_USE = """\
import os
import select
import selectors
import signal
import socket
import threading
import time
from functools import partial


def opts(now=time.time, tick=time.monotonic, pid=os.getpid, me=threading.current_thread,
         timeout=socket.timeout, error=select.error, family=socket.AF_INET,
         flag=select.POLLIN, sig=signal.SIGTERM):
    return now


CLOCKS = {"now": time.time, "timeout": socket.timeout, "family": socket.AF_INET}
ME = threading.current_thread()
SELECT_ONLY = selectors.SelectSelector()  # patching re-points the class's `_select`


def later():
    def nested(sleep=time.sleep, lock=threading.Lock()):
        return sleep, lock

    return nested, partial(time.sleep, 1), {"sleep": time.sleep}, threading.local()
"""


def test_unpatched_names_constants_exceptions_and_function_bodies(tmp_path: Path) -> None:
    assert _findings(tmp_path, {"app.py": NOT_A_USE + PATCH}) == []


def test_main_guard_runs_only_in_the_script(tmp_path: Path) -> None:
    guarded = "import time\nif __name__ == '__main__':\n    WAIT = {'sleep': time.sleep}\n"
    files = {"helpers.py": guarded, "wsgi.py": "import helpers\n" + guarded + PATCH}
    assert _findings(tmp_path, files) == [("MPA201", "wsgi.py", 4)]
