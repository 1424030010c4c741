"""Tests for patchaudit._gevent_patches and the probe's patch-lists job.

No mocks: every test runs the real probe in a real child interpreter against the installed
gevent, so these assertions are facts about that gevent (checked against 26.9.0 on CPython 3.11,
with version gates where gevent's behaviour changed).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from patchaudit._gevent_patches import (
    PROBE_JOB,
    PROBE_SCRIPT,
    PatchListError,
    PatchLists,
    clear_memo,
    load_patch_lists,
)

GEVENT_VERSION = metadata.version("gevent")


def _version_tuple(version: str) -> tuple[int, ...]:
    """'25.4.1' -> (25, 4, 1); stops at the first non-numeric part ('26.0.0a1' -> (26, 0))."""
    parts = []
    for piece in version.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.group() != piece:
            break
    return tuple(parts)


@pytest.fixture(scope="module")
def lists() -> PatchLists:
    clear_memo()
    return load_patch_lists()


@pytest.fixture(autouse=True)
def _fresh_memo():
    # The in-process memo would otherwise make later tests see earlier results.
    clear_memo()
    yield
    clear_memo()


@pytest.fixture(scope="module")
def bare_venv_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter with no gevent: a fresh venv without pip or system site-packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    bindir = "Scripts" if os.name == "nt" else "bin"
    return str(venv / bindir / ("python.exe" if os.name == "nt" else "python"))


# --- facts about the installed gevent ------------------------------------------------------


def test_versions_match_this_interpreter(lists: PatchLists) -> None:
    assert lists.gevent_version == GEVENT_VERSION
    assert lists.python_version == ".".join(map(str, sys.version_info[:3]))
    assert lists.platform == sys.platform


def test_options_come_from_patch_all_signature(lists: PatchLists) -> None:
    for kwarg in ("socket", "dns", "time", "select", "thread", "os", "ssl", "subprocess"):
        assert lists.options[kwarg] is True
    assert lists.options["sys"] is False
    assert lists.options["aggressive"] is True
    assert lists.options["Event"] is True
    assert "kwargs" not in lists.options


def test_time_patches_only_sleep(lists: PatchLists) -> None:
    assert lists.by_option["time"] == {"time": ("sleep",)}
    assert lists.replacements["time"]["sleep"] == "gevent.hub.sleep"
    assert lists.option_for_module("time") == "time"
    assert not lists.is_patched("time", "monotonic")


def test_socket_includes_dns(lists: PatchLists) -> None:
    socket_names = lists.by_option["socket"]["socket"]
    for name in ("socket", "SocketType", "create_connection", "getaddrinfo", "gethostbyname"):
        assert name in socket_names
    assert lists.replacements["socket"]["socket"] == "gevent._socket3.socket"
    # dns= governs a subset of the socket names.
    assert "getaddrinfo" in lists.by_option["dns"]["socket"]
    assert "socket" not in lists.by_option["dns"]["socket"]
    assert set(lists.by_option["dns"]["socket"]) <= set(socket_names)
    assert lists.option_for_module("socket") == "socket"
    assert not lists.is_patched("socket", "gethostname")


def test_thread_covers_thread_and_threading(lists: PatchLists) -> None:
    thread = lists.by_option["thread"]
    assert {"allocate_lock", "start_new_thread", "get_ident"} <= set(thread["_thread"])
    assert {"Thread", "Lock", "local", "Event"} <= set(thread["threading"])
    assert thread["_threading_local"] == ("local",)
    # logging._lock is only patched when logging is imported first; the probe imports it.
    assert "_lock" in thread["logging"]
    assert lists.option_for_module("threading") == "thread"
    assert lists.option_for_module("_thread") == "thread"
    assert lists.option_for_module("logging") == "thread"
    assert lists.replacements["threading"]["Thread"] == "gevent.threading.Thread"
    # _thread.RLock stays the native C lock.
    assert not lists.is_patched("_thread", "RLock")


def test_ssl_maps_sslcontext(lists: PatchLists) -> None:
    assert "SSLContext" in lists.by_option["ssl"]["ssl"]
    assert "wrap_socket" in lists.by_option["ssl"]["ssl"]
    assert lists.replacements["ssl"]["SSLContext"] == "gevent.ssl.SSLContext"
    assert not lists.is_patched("ssl", "create_default_context")


def test_select_and_selectors(lists: PatchLists) -> None:
    select = lists.by_option["select"]
    assert {"select", "poll"} <= set(select["select"])
    assert "DefaultSelector" in select["selectors"]
    assert lists.replacements["selectors"]["DefaultSelector"] == "gevent.selectors.GeventSelector"
    assert lists.option_for_module("selectors") == "select"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll is Linux-only")
def test_aggressive_removes_epoll(lists: PatchLists) -> None:
    assert "epoll" in lists.removed["select"]
    assert "EpollSelector" in lists.removed["selectors"]
    # Removed names count as patched but have no replacement object.
    assert lists.is_patched("select", "epoll")
    assert "epoll" not in lists.replacements["select"]


def test_os_patches_fork_but_not_read(lists: PatchLists) -> None:
    if os.environ.get("GEVENT_NOWAITPID"):
        pytest.skip("GEVENT_NOWAITPID changes os patching")
    assert {"fork", "waitpid"} <= set(lists.by_option["os"]["os"])
    assert lists.replacements["os"]["fork"].startswith("gevent.os.")
    for name in ("read", "write", "system", "pipe"):
        assert not lists.is_patched("os", name)
    if _version_tuple(lists.gevent_version) >= (25, 8, 1):
        assert lists.is_patched("os", "close")


def test_queue_queue_patched_iff_gevent_25_4_1(lists: PatchLists) -> None:
    assert "SimpleQueue" in lists.by_option["queue"]["queue"]
    expected = _version_tuple(lists.gevent_version) >= (25, 4, 1) and not os.environ.get(
        "GEVENT_MONKEY_DISABLE_QUEUE_QUEUE"
    )
    assert lists.is_patched("queue", "Queue") is expected


def test_noop_patchers_are_reported_empty(lists: PatchLists) -> None:
    # patch_builtins/patch_contextvars are called by patch_all but replace nothing on py3.
    assert lists.by_option["builtins"] == {}
    assert lists.by_option["contextvars"] == {}
    assert "sys" not in lists.by_option  # sys=False by default: never called
    assert lists.call_order[:3] == ("patch_os", "patch_thread", "patch_time")


def test_module_queries(lists: PatchLists) -> None:
    patched = lists.patched_modules()
    assert {"os", "time", "socket", "ssl", "threading", "_thread", "select"} <= patched
    assert "json" not in patched
    assert lists.patched_names("time") == frozenset({"sleep"})
    assert lists.patched_names("json") == frozenset()
    assert lists.option_for_module("json") is None


def test_unrecorded_patches_are_found(lists: PatchLists) -> None:
    # gevent replaces threading._active_limbo_lock without recording it in monkey.saved.
    assert lists.unrecorded["threading"]["_active_limbo_lock"].startswith("gevent.")
    assert not lists.is_patched("threading", "_active_limbo_lock")


def test_startup_modules(lists: PatchLists) -> None:
    assert {"sys", "builtins"} <= lists.startup_modules
    assert not any(m == "gevent" or m.startswith("gevent.") for m in lists.startup_modules)
    assert "ssl" not in lists.startup_modules


def test_json_round_trip(lists: PatchLists) -> None:
    data = json.loads(json.dumps(lists.to_json()))
    assert PatchLists.from_json(data) == lists


# --- the probe script ---------------------------------------------------------------------


def test_probe_is_self_contained() -> None:
    tree = ast.parse(PROBE_SCRIPT.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the probe"
            imported.add((node.module or "").split(".")[0])
    assert "patchaudit" not in imported
    assert imported <= set(sys.stdlib_module_names) | {"gevent"}


def test_probe_prints_one_json_object() -> None:
    proc = subprocess.run(
        [sys.executable, str(PROBE_SCRIPT), PROBE_JOB], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    data = json.loads(proc.stdout)
    assert data["gevent_version"] == GEVENT_VERSION
    assert data["patch_all_returned"] is True


def test_probe_without_gevent_prints_json_error(bare_venv_python: str) -> None:
    proc = subprocess.run(
        [bare_venv_python, str(PROBE_SCRIPT), PROBE_JOB],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    data = json.loads(proc.stdout)
    assert data["error_kind"] == "gevent-missing"
    assert "gevent" in data["error"]


def test_importing_module_does_not_import_gevent() -> None:
    code = (
        "import sys, patchaudit\n"
        "before = {m for m in sys.modules if m.split('.')[0] == 'gevent'}\n"
        "import patchaudit._gevent_patches\n"
        "after = {m for m in sys.modules if m.split('.')[0] == 'gevent'}\n"
        "print(sorted(after - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- caching ------------------------------------------------------------------------------


def test_memo_makes_repeat_calls_free() -> None:
    first = load_patch_lists()
    assert load_patch_lists() is first
    assert load_patch_lists(sys.executable) is first


def test_cache_round_trip(tmp_path: Path) -> None:
    first = load_patch_lists(cache_dir=tmp_path)
    files = list(tmp_path.glob("gevent-patches-*.json"))
    assert len(files) == 1
    assert [p.name for p in tmp_path.iterdir()] == [files[0].name]  # no temp files left
    assert PatchLists.from_json(json.loads(files[0].read_text())) == first

    # Prove the second load reads the file: plant a marker the probe could never produce.
    data = json.loads(files[0].read_text())
    data["gevent_version"] = "from-cache"
    files[0].write_text(json.dumps(data))
    clear_memo()
    second = load_patch_lists(cache_dir=tmp_path)
    assert second.gevent_version == "from-cache"
    assert second.by_option == first.by_option


@pytest.mark.parametrize("junk", ["{not json", "[]", '{"schema": 1}', ""])
def test_corrupt_cache_is_ignored(tmp_path: Path, junk: str) -> None:
    load_patch_lists(cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("gevent-patches-*.json")
    cache_file.write_text(junk)
    clear_memo()
    lists = load_patch_lists(cache_dir=tmp_path)
    assert lists.gevent_version == GEVENT_VERSION
    # ... and the bad file was replaced by a good one.
    assert PatchLists.from_json(json.loads(cache_file.read_text())) == lists


def test_gevent_env_is_part_of_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lists: PatchLists
) -> None:
    if not lists.is_patched("os", "waitpid"):
        pytest.skip("waitpid not patched here")
    load_patch_lists(cache_dir=tmp_path)
    monkeypatch.setenv("GEVENT_NOWAITPID", "1")
    nowait = load_patch_lists(cache_dir=tmp_path)
    assert not nowait.is_patched("os", "waitpid")
    assert nowait.is_patched("os", "fork")
    assert len(list(tmp_path.glob("gevent-patches-*.json"))) == 2


# --- errors -------------------------------------------------------------------------------


def _assert_one_line(exc: pytest.ExceptionInfo[PatchListError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def test_bogus_interpreter(tmp_path: Path) -> None:
    bogus = tmp_path / "no-such-dir" / "python3"
    with pytest.raises(PatchListError) as exc:
        load_patch_lists(str(bogus))
    message = _assert_one_line(exc)
    assert "not found" in message and str(bogus) in message


def test_interpreter_without_gevent(bare_venv_python: str, tmp_path: Path) -> None:
    with pytest.raises(PatchListError) as exc:
        load_patch_lists(bare_venv_python, cache_dir=tmp_path)
    message = _assert_one_line(exc)
    assert message.startswith(f"gevent is not installed in {bare_venv_python}")
    assert list(tmp_path.iterdir()) == []  # failures are not cached


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as the 'interpreter'")
def test_non_python_output_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'this is not json'\necho 'boom: it broke' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(PatchListError) as exc:
        load_patch_lists(str(fake))
    message = _assert_one_line(exc)
    assert "boom: it broke" in message and str(fake) in message


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(PatchListError) as exc:
        load_patch_lists(str(fake), timeout=1)
    assert time.monotonic() - started < 30
    assert "timed out" in _assert_one_line(exc)

    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {grandchild} survived the timeout")
