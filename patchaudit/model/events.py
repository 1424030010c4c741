"""Typed events: the probe's and the pytest plugin's JSON dicts, parsed once.

The probe (:mod:`patchaudit.probe`) must stay stdlib-only and loadable by path in the
audited process, so it writes plain dicts (one JSON object per line, ``"event"`` naming the
kind). :func:`parse` turns each into the dataclass of its kind when the facts are built; the
rules read attributes, and each event says where it happened with one :meth:`Event.location`.

The dicts' vocabulary is :data:`EVENT_SCHEMA_VERSION`; a field the probe adds is ignored here
until a dataclass names it. ``get``/``[]`` still read the raw dict, for consumers outside the
rules (the timeline, the demo) that have not moved to attributes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .facts import Facts

#: The version of the probe's event dicts these classes read: the probe's own
#: ``patchaudit.probe._machinery.EVENT_SCHEMA`` (its ``start`` event's ``schema``), which this
#: leaf layer does not import. Bump both when a field changes meaning (tests/test_model.py
#: checks they agree); adding a field does not need it.
EVENT_SCHEMA_VERSION = 1

Frame = Mapping[str, Any]  # {"file", "line", "function", "code"?}: stacks stay plain data


def waited_for(greenlet: Mapping[str, Any]) -> str | None:
    """What a parked greenlet of a hang dump waits on, as reports name it: ``Lock `name```,
    or the bare type when no app variable holds the object; None when unknown."""
    held = greenlet.get("waits_for")
    if not isinstance(held, Mapping) or not held.get("type"):
        return None
    name = held.get("name")
    return f"{held['type']} `{name}`" if name else str(held["type"])


@dataclass(frozen=True, eq=False)
class Event:
    """One recorded event. Subclasses add the fields of their kind."""

    KIND: ClassVar[str] = ""

    kind: str
    raw: Mapping[str, Any] = field(repr=False)
    file: str | None = None
    line: int | None = None
    phase: str | None = None

    def location(self, facts: Facts, default: str | None = None) -> tuple[str, int]:
        """Where it happened, as findings show it: the path and line (1 when unknown)."""
        return facts.where(self, default=default)

    # -- the raw dict, for consumers still reading the probe's vocabulary ---------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


@dataclass(frozen=True, eq=False)
class StartEvent(Event):
    KIND: ClassVar[str] = "start"
    python: str | None = None
    gevent_version: str | None = None
    startup_modules: list[str] | None = None


@dataclass(frozen=True, eq=False)
class DoneEvent(Event):
    KIND: ClassVar[str] = "done"
    status: str | None = None
    reason: str | None = None


@dataclass(frozen=True, eq=False)
class ErrorEvent(Event):
    """The target raised (or called ``sys.exit``) while importing or starting."""

    KIND: ClassVar[str] = "error"
    type: str | None = None
    message: str | None = None
    code: Any = None
    import_chain: list[str] | None = None
    # "system-exit" for sys.exit(); named error_kind here, the raw key is "kind"
    error_kind: str | None = None


@dataclass(frozen=True, eq=False)
class ExitEvent(Event):
    KIND: ClassVar[str] = "exit"
    code: Any = None


@dataclass(frozen=True, eq=False)
class TerminatedEvent(Event):
    """SIGTERM (the timeout) reached the probe: where the app was."""

    KIND: ClassVar[str] = "terminated"
    stack: list[Frame] | None = None
    main_greenlet_stack: list[Frame] | None = None
    # every parked greenlet: {"greenlet", "stack", "waits_on", "waits_for", "request"}; every
    # other native thread: {"thread", "stack", "waits_for"} (see waited_for)
    greenlets: list[Mapping[str, Any]] | None = None
    threads: list[Mapping[str, Any]] | None = None


@dataclass(frozen=True, eq=False)
class StalledEvent(Event):
    """Requests stopped completing while serving: every parked greenlet and native thread."""

    KIND: ClassVar[str] = "stalled"
    path: str | None = None
    timeout: float | None = None
    # as in TerminatedEvent
    greenlets: list[Mapping[str, Any]] | None = None
    threads: list[Mapping[str, Any]] | None = None


@dataclass(frozen=True, eq=False)
class RequestErrorEvent(Event):
    KIND: ClassVar[str] = "request_error"
    path: str | None = None
    type: str | None = None
    message: str | None = None


@dataclass(frozen=True, eq=False)
class ImportEvent(Event):
    KIND: ClassVar[str] = "import"
    module: str = ""
    importer: str | None = None


@dataclass(frozen=True, eq=False)
class PatchEvent(Event):
    KIND: ClassVar[str] = "patch"
    framework: str | None = None
    function: str | None = None
    kwargs: Mapping[str, Any] | None = None
    warnings: list[Mapping[str, Any]] | None = None
    threads: list[str] | None = None
    main_thread: bool | None = None
    already_patched: Mapping[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class SettingsEvent(Event):
    KIND: ClassVar[str] = "settings"
    settings: Mapping[str, Any] | None = None
    saved: Mapping[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class StaleEvent(Event):
    KIND: ClassVar[str] = "stale"
    holder: str | None = None
    holder_kind: str | None = None
    holder_file: str | None = None
    name: str | None = None
    original: str | None = None
    how: str | None = None  # "binding", "default", "closure", ..., "instance" (absent before)

    @property
    def identity(self) -> tuple[str | None, str | None, str | None]:
        """What makes two runs' stale references the same one (the noise floor's key)."""
        return (self.holder, self.name, self.original)


@dataclass(frozen=True, eq=False)
class OwnersEvent(Event):
    KIND: ClassVar[str] = "owners"
    owners: Mapping[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class ForkEvent(Event):
    KIND: ClassVar[str] = "fork"
    what: str | None = None
    after_patch: bool | None = None


@dataclass(frozen=True, eq=False)
class LibrariesEvent(Event):
    KIND: ClassVar[str] = "libraries"
    library: str | None = None
    ok: bool | None = None
    detail: str | None = None
    check: str | None = None


@dataclass(frozen=True, eq=False)
class BlockEvent(Event):
    KIND: ClassVar[str] = "block"
    stack: list[Frame] | None = None
    blocking_time: float | None = None
    path: str | None = None


@dataclass(frozen=True, eq=False)
class HubRunEvent(Event):
    KIND: ClassVar[str] = "hub_run"
    duration: float | None = None
    samples: list[Mapping[str, Any]] | None = None  # {"phase", "path", "weight", "stack"}
    path: str | None = None


@dataclass(frozen=True, eq=False)
class ServeEvent(Event):
    KIND: ClassVar[str] = "serve"
    path: str | None = None
    single: float | None = None
    wall: float | None = None
    statuses: Mapping[str, int] | None = None
    requests: int | None = None
    latencies: list[float | None] | None = None


@dataclass(frozen=True, eq=False)
class TargetEvent(Event):
    KIND: ClassVar[str] = "target"
    callable: str | None = None
    wsgi: Any = None
    reason: str | None = None


@dataclass(frozen=True, eq=False)
class PytestSessionEvent(Event):
    KIND: ClassVar[str] = "pytest_session"
    startup_modules: list[str] | None = None
    plugins: list[str] | None = None
    patched_before: bool | None = None


@dataclass(frozen=True, eq=False)
class _TestPlaced(Event):
    """An event about one test: with no better place, it happened at the test."""

    test_file: str | None = None
    test_line: int | None = None

    def location(self, facts: Facts, default: str | None = None) -> tuple[str, int]:
        return facts.where(self, file="test_file", line="test_line", default=default)


@dataclass(frozen=True, eq=False)
class GeventUseEvent(_TestPlaced):
    KIND: ClassVar[str] = "pytest_gevent_use"
    first_test: str | None = None
    tests: int | None = None


@dataclass(frozen=True, eq=False)
class TestBlockEvent(_TestPlaced):
    KIND: ClassVar[str] = "test_block"
    __test__: ClassVar[bool] = False  # not a pytest test class, whatever its name says
    test: str | None = None
    seconds: float | None = None
    limit: float | None = None
    greenlet: str | None = None
    stack: list[Frame] | None = None


@dataclass(frozen=True, eq=False)
class PatchUndoneEvent(Event):
    KIND: ClassVar[str] = "patch_undone"
    test: str | None = None
    targets: list[str] | None = None
    culprit: str | None = None
    holders: list[Mapping[str, Any]] | None = None


@dataclass(frozen=True, eq=False)
class TimeoutThreadEvent(Event):
    KIND: ClassVar[str] = "timeout_thread"
    test: str | None = None
    timeout: Any = None
    source: str | None = None


@dataclass(frozen=True, eq=False)
class GunicornEvent(Event):
    """A step of gunicorn's master or worker the probe ran: the config file or a server hook."""

    KIND: ClassVar[str] = "gunicorn"
    step: str | None = None
    process: str | None = None
    after_patch: bool | None = None
    calls: list[Mapping[str, Any]] | None = None
    raised: str | None = None


_KINDS: dict[str, type[Event]] = {
    cls.KIND: cls
    for cls in (
        StartEvent,
        DoneEvent,
        ErrorEvent,
        ExitEvent,
        TerminatedEvent,
        StalledEvent,
        RequestErrorEvent,
        ImportEvent,
        PatchEvent,
        SettingsEvent,
        StaleEvent,
        OwnersEvent,
        ForkEvent,
        LibrariesEvent,
        BlockEvent,
        HubRunEvent,
        ServeEvent,
        TargetEvent,
        PytestSessionEvent,
        GeventUseEvent,
        TestBlockEvent,
        PatchUndoneEvent,
        TimeoutThreadEvent,
        GunicornEvent,
    )
}
_FIELDS = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("kind", "raw"))
    for cls in (Event, *_KINDS.values())
}
_LINES = ("line", "test_line")
#: Fields whose raw key would shadow the event's own ``kind``.
_RAW_NAMES = {"error_kind": "kind"}


def parse(raw: Mapping[str, Any]) -> Event:
    """The typed form of one event dict; kinds without a class of their own get :class:`Event`."""
    kind = str(raw.get("event", ""))
    cls = _KINDS.get(kind, Event)
    values: dict[str, Any] = {}
    for name in _FIELDS[cls]:
        value = raw.get(_RAW_NAMES.get(name, name))
        if name in _LINES:
            value = int(value) if value else None
        values[name] = value
    return cls(kind=kind, raw=raw, **values)
