"""What the plugin records in the test process, as the runtime probe's event dicts.

The probe package (:mod:`patchaudit.probe`) is loaded by path under a private name and installed
in-process (its ``_inprocess`` module): its import recorder and patch-call hooks append
``import``/``patch``/``settings`` events to :attr:`AuditSession.events`. This module adds the
plugin's own events (see :mod:`patchaudit.rules.plugin`): the session start, per-test blocking
episodes, patches undone after a test, pytest-timeout's thread method, and whether the tests
used gevent.

Nothing here imports gevent: it reads ``sys.modules`` and only touches gevent once the tests
have imported it.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..probe._machinery import BOOKKEEPING_PREFIX, SETTINGS_KEY

_MISSING = object()


@dataclass(frozen=True)
class Settings:
    threshold: float
    json_path: Path | None
    strict: bool


def load_probe() -> ModuleType:
    """A fresh copy of the probe package under its private name, by the boot script's loader;
    returns its in-process API (``install_in_process``, ``stale_references``, ...)."""
    from ..probe.__main__ import load

    return load("_inprocess")


class AuditSession:
    """Recording state of one pytest process (a controller, a worker, or a plain run)."""

    def __init__(
        self, settings: Settings, rootdir: Path, invocation_dir: Path, plugins: list[str]
    ) -> None:
        self.settings = settings
        self.rootdir = rootdir
        self.invocation_dir = invocation_dir
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []  # internal errors: one line each, never raised
        self.startup_modules = sorted(sys.modules)
        self.monitor: Any = None
        self.tests = 0
        self.hub_tests = 0
        self.first_hub_test: tuple[str, str, int] | None = None
        self.patch_state = PatchState()
        self.timeout_reported = False
        self.findings: list[Any] | None = None
        self.worker_outputs: list[str] = []  # JSON texts from xdist workers
        self.states: list[str] = []  # patch state of this process and of each worker
        self.context: Any = None  # the RuntimeContext the findings were judged on (cached)
        self.workers = 0
        self.probe = load_probe()
        patched_before = self._patched_now()
        self.probe.install_in_process(self._sink, app_roots=[str(rootdir)])
        self.events.append(
            {
                "event": "pytest_session",
                "startup_modules": self.startup_modules,
                "plugins": plugins,
                "patched_before": patched_before,
            }
        )
        if patched_before:
            self._launcher_patch_events()

    def _sink(self, record: dict[str, Any]) -> None:
        self.events.append(record)
        if record.get("event") == "patch":
            self.patch_state.refresh()  # the baseline for "still patched after each test"

    # -- patch state ---------------------------------------------------------------------------
    @staticmethod
    def _patched_now() -> bool:
        monkey = sys.modules.get("gevent.monkey")
        patcher = sys.modules.get("eventlet.patcher")
        return bool(getattr(monkey, "saved", None) or getattr(patcher, "already_patched", None))

    def _launcher_patch_events(self) -> None:
        """The process was patched before pytest loaded us: record it as the probe would."""
        monkey = sys.modules.get("gevent.monkey")
        if getattr(monkey, "saved", None):
            settings = monkey.saved.get(SETTINGS_KEY) or {}
            self.events.append(self._launcher_patch("gevent", settings, None))
        patcher = sys.modules.get("eventlet.patcher")
        if getattr(patcher, "already_patched", None):
            event = self._launcher_patch("eventlet", {}, dict(patcher.already_patched))
            self.events.append(event)

    def _launcher_patch(self, framework: str, kwargs: dict, already: dict | None) -> dict:
        event = {
            "event": "patch",
            "framework": framework,
            "function": "patch_all" if framework == "gevent" else "monkey_patch",
            "args": None,
            "kwargs": {
                str(k): repr(v) if not isinstance(v, bool | int | str) else v
                for k, v in kwargs.items()
            },
            "file": "<launcher>",
            "line": None,
            "main_thread": True,
            "threads": ["MainThread"],
            "returned": None,
            "raised": None,
            "warnings": [],
            "via": "launcher",
        }
        if already is not None:
            event["already_patched"] = {str(k): bool(v) for k, v in already.items()}
        return event

    def involved(self) -> bool:
        """Whether gevent or eventlet played any part in this process."""
        if any(m in sys.modules for m in ("gevent", "eventlet")) or self.hub_tests:
            return True
        return any(e.get("event") == "patch" for e in self.events)

    def gevent_patched(self) -> bool:
        monkey = sys.modules.get("gevent.monkey")
        return bool(getattr(monkey, "saved", None))

    def describe_patch_state(self, final: bool = False) -> str:
        """One line for the report header (``final``: for the summary, at the end)."""
        if not self._patched_now():
            state = "not patched" if final else "not patched yet"
            imported = [m for m in ("gevent", "eventlet") if m in sys.modules]
            return f"{state} ({', '.join(imported)} imported)" if imported else state
        for event in self.events:
            if event.get("event") == "patch":
                if event.get("file") == "<launcher>":
                    return f"{event['framework']}-patched before pytest started (a launcher)"
                where = _display(event.get("file"), self.invocation_dir)
                return (
                    f"patched by {event['framework']} {event.get('function')}() at "
                    f"{where}:{event.get('line')}, after pytest started"
                )
        return "patched"

    # -- per test ------------------------------------------------------------------------------
    def start_test(self, nodeid: str, limit: float | None) -> None:
        """Arm the blocking monitor (created once the tests have imported gevent)."""
        self.tests += 1
        self.patch_state.refresh()
        if limit is None:
            return
        if self.monitor is None and "gevent.hub" in sys.modules:
            from ._blocking import BlockMonitor

            self.monitor = BlockMonitor(self.settings.threshold)
        if self.monitor is not None:
            self.monitor.arm(nodeid, limit)

    def set_phase(self, phase: str) -> None:
        if self.monitor is not None:
            self.monitor.phase = phase

    def finish_test(
        self, nodeid: str, location: tuple[str, int], audited: bool, pluginmanager: Any
    ) -> None:
        """Collect the test's blocking episodes, check the patches are still in place."""
        episodes = self.monitor.disarm() if self.monitor is not None else []
        hub = _main_hub_exists()
        if hub:
            self.hub_tests += 1
            if self.first_hub_test is None:
                self.first_hub_test = (nodeid, *location)
        if audited and hub:
            for episode in episodes:
                self.events.append(self._block_event(episode, location))
        self._check_undone(nodeid, pluginmanager)

    def _block_event(self, episode: dict[str, Any], location: tuple[str, int]) -> dict[str, Any]:
        import linecache

        frames = []
        for file, line, function in episode.get("frames") or []:
            code = linecache.getline(file, line).strip() or None
            frames.append({"file": file, "line": line, "function": function, "code": code})
        return {
            "event": "test_block",
            "test": episode.get("test"),
            "phase": episode.get("phase"),
            "seconds": episode.get("seconds"),
            "limit": self.monitor.threshold if self.monitor is not None else None,
            "greenlet": episode.get("greenlet"),
            "stack": frames,
            "test_file": location[0],
            "test_line": location[1],
        }

    def _check_undone(self, nodeid: str, pluginmanager: Any) -> None:
        self.patch_state.refresh()
        undone = self.patch_state.undone()
        if undone:
            plugins = [p for _, p in pluginmanager.list_name_plugin() if p is not None]
            self.events.append(_undone_event(nodeid, undone, plugins))

    def timeout_armed(
        self,
        nodeid: str,
        settings: Any,
        source: tuple[str, str | None, int | None],
        main_thread: bool,
    ) -> None:
        """pytest-timeout is about to set a timer: note its thread method once, if patched."""
        if self.timeout_reported or not getattr(settings, "timeout", None):
            return
        method = getattr(settings, "method", None)
        if method == "signal" and not main_thread:
            method, source = "thread", ("non-main thread", None, None)
        if method != "thread" or not self._threading_patched():
            return
        self.timeout_reported = True
        self.events.append(
            {
                "event": "timeout_thread",
                "test": nodeid,
                "timeout": settings.timeout,
                "source": source[0],
                "file": source[1],
                "line": source[2],
            }
        )

    @staticmethod
    def _threading_patched() -> bool:
        monkey = sys.modules.get("gevent.monkey")
        saved = getattr(monkey, "saved", None) or {}
        if "threading" in saved or "_thread" in saved:
            return True
        patcher = sys.modules.get("eventlet.patcher")
        return bool((getattr(patcher, "already_patched", None) or {}).get("thread"))

    # -- after collection, at the end ----------------------------------------------------------
    def after_collection(self) -> None:
        """Stale references and owners, once every test module is imported."""
        if self.gevent_patched():
            scanned = self.probe.stale_references()
            if scanned is not None:
                found, originals = scanned
                for fields in found:
                    self.events.append({"event": "stale", **fields})
                self.events.append(
                    {"event": "stale_scan", "originals": originals, "holders": len(found)}
                )
        if self._patched_now():
            self.probe.emit_owners()
        if self.gevent_patched():  # the library checks only mean something under gevent
            self.probe.emit_libraries()

    def close(self) -> None:
        """Stop recording (idempotent)."""
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        try:
            self.probe.uninstall_in_process()
        except Exception:
            pass

    def usage_event(self) -> dict[str, Any]:
        first = self.first_hub_test
        return {
            "event": "pytest_gevent_use",
            "first_test": first[0] if first else None,
            "test_file": first[1] if first else None,
            "test_line": first[2] if first else None,
            "tests": self.hub_tests,
        }


class PatchState:
    """Which names gevent patched, to notice when one holds its original again.

    ``gevent.monkey.saved`` only grows, and every patch call records what it replaced there, so
    the names to watch are rebuilt only when its size changes; a check is then one ``getattr``
    per watched name (about 150 after ``patch_all()``: microseconds per test).
    """

    def __init__(self) -> None:
        self._signature: tuple[int, int] | None = None
        self._watch: list[tuple[str, str, ModuleType, Any]] = []

    def refresh(self) -> None:
        monkey = sys.modules.get("gevent.monkey")
        saved = getattr(monkey, "saved", None)
        if not saved:
            return
        signature = (id(saved), sum(len(v) for v in list(saved.values()) if isinstance(v, dict)))
        if signature == self._signature:
            return
        self._signature = signature
        watched = {(name, attr) for name, attr, _, _ in self._watch}
        for mod_name, items in list(saved.items()):
            if str(mod_name).startswith(BOOKKEEPING_PREFIX) or not isinstance(items, dict):
                continue
            module = sys.modules.get(mod_name)
            if module is None:
                continue
            for attr, original in list(items.items()):
                current = getattr(module, attr, _MISSING)
                if current is not _MISSING and current is not original:
                    if (mod_name, attr) not in watched:
                        self._watch.append((mod_name, attr, module, original))

    def undone(self) -> list[tuple[str, str, Any]]:
        """Watched names that hold their original again (each reported once)."""
        back = [
            (name, attr, original)
            for name, attr, module, original in self._watch
            if getattr(module, attr, _MISSING) is original
        ]
        if back:
            gone = {(name, attr) for name, attr, _ in back}
            self._watch = [w for w in self._watch if (w[0], w[1]) not in gone]
        return back


def _main_hub_exists() -> bool:
    local = sys.modules.get("gevent._hub_local")
    get = getattr(local, "get_hub_if_exists", None)
    try:
        return get is not None and get() is not None
    except Exception:
        return False


def _undone_event(
    nodeid: str, undone: list[tuple[str, str, Any]], plugins: list[object]
) -> dict[str, Any]:
    """Who still holds the originals that came back: a pytest plugin is the likely culprit."""
    plugin_ids = {id(m) for m in plugins}
    module_dicts = {}
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict):
            module_dicts.setdefault(id(namespace), (name, module))
    holders: list[dict[str, Any]] = []
    seen = set()
    for mod_name, _attr, original in undone:
        for ref in gc.get_referrers(original):
            found = module_dicts.get(id(ref)) if isinstance(ref, dict) else None
            if found is None:
                continue
            holder, module = found
            if holder == mod_name or holder.startswith(("gevent", "_patchaudit")):
                continue
            if holder in sys.builtin_module_names:
                continue
            for key, value in list(ref.items()):
                if value is original and (holder, key) not in seen:
                    seen.add((holder, key))
                    holders.append(
                        {
                            "module": holder,
                            "name": key,
                            "file": getattr(module, "__file__", None),
                            "plugin": id(module) in plugin_ids,
                        }
                    )
    culprits = [h["module"] for h in holders if h["plugin"]]
    return {
        "event": "patch_undone",
        "test": nodeid,
        "targets": [f"{m}.{a}" for m, a, _ in undone],
        "culprit": culprits[0] if culprits else None,
        "holders": holders[:20],
    }


def _display(path: str | None, base: Path) -> str:
    if not path or path.startswith("<"):
        return path or "<unknown>"
    try:
        return Path(os.path.realpath(path)).relative_to(os.path.realpath(base)).as_posix()
    except ValueError:
        return path
