"""The states of the units the manager manages, and the streams that push them to subscribers.

Managed units are the files in the units dir plus the instances of templates there. Their
states come from systemd's signals and from reads; `ManagedUnits` keeps the last one of each and
pushes only real changes, each one whole: a state that says the unit cannot run is pushed once
why is read too (Result=, the failed process, the load error), so every consumer learns the
failure and its reason at the same time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from fleetd.errors import TemporaryError
from fleetd.systemd.dbus import UNIT_IFACE, SystemdBus, SystemdError, UnitChanged
from fleetd.systemd.failure import BAD_LOAD_STATES, RESULT_IFACES, failed_process
from fleetd.unit import UnitNameError, parse_name

__all__ = ["ManagedUnits", "UnitChanges", "UnitState"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UnitState:
    name: str
    load: str  # loaded, not-found, bad-setting, error, masked
    active: str  # active, reloading, inactive, failed, activating, deactivating
    sub: str  # running, dead, exited, failed, ...
    # Why it is not running, read once when it fails or cannot be loaded (empty otherwise):
    result: str = ""  # Result=: exit-code, signal, timeout, start-limit-hit, ...
    exit: str = ""  # the process that failed, as systemctl status shows it
    load_error: str = ""  # LoadError's message

    def same_as(self, other: UnitState | None) -> bool:
        """The same load/active/sub (whatever the details)."""
        return other is not None and (self.load, self.active, self.sub) == (
            other.load,
            other.active,
            other.sub,
        )

    @property
    def needs_details(self) -> bool:
        return self.active == "failed" or self.load in BAD_LOAD_STATES

    @property
    def detailed(self) -> bool:
        return bool(self.result or self.exit or self.load_error)


class UnitChanges:
    """One subscriber's stream of UnitState changes (`async for state in changes: ...`)."""

    def __init__(self, subscribers: set[UnitChanges]) -> None:
        self._subscribers = subscribers
        self._queue: asyncio.Queue[UnitState] = asyncio.Queue()

    def push(self, state: UnitState) -> None:
        self._queue.put_nowait(state)

    def __aiter__(self) -> UnitChanges:
        return self

    async def __anext__(self) -> UnitState:
        return await self._queue.get()

    async def __aenter__(self) -> UnitChanges:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._subscribers.discard(self)


def _state_of(row: Any) -> UnitState:
    """A row of `ListUnitsByNames`/`ListUnitsByPatterns`: (name, description, load, active,
    sub, ...)."""
    return UnitState(row[0], row[2], row[3], row[4])


class ManagedUnits:
    """Which units are ours, their last known states, and the subscribers told of changes.

    `bus` gives the connected bus or raises BusUnavailable: the reads are made on whatever
    connection the manager holds at the time.
    """

    def __init__(self, bus: Callable[[], SystemdBus]) -> None:
        self.files: set[str] = set()  # unit files in the units dir
        self.states: dict[str, UnitState] = {}
        self._bus = bus
        self._subscribers: set[UnitChanges] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # reads completing a state

    def is_managed(self, name: str) -> bool:
        if name in self.files:
            return True
        try:
            parsed = parse_name(name)
        except UnitNameError:
            return False
        return parsed.is_instance and parsed.template in self.files

    async def read(self) -> dict[str, UnitState]:
        """The (load, active, sub) of every managed unit systemd knows, read now."""
        bus = self._bus()
        names = sorted(n for n in self.files if not parse_name(n).is_template)
        rows: list[Any] = []
        if names:
            (rows,) = await bus.call("ListUnitsByNames", "as", [names])
        templates = sorted(n for n in self.files if parse_name(n).is_template)
        if templates:  # instances of our templates that systemd has loaded
            patterns = [n.replace("@.", "@*.") for n in templates]
            (more,) = await bus.call("ListUnitsByPatterns", "asas", [[], patterns])
            rows += more
        states = {}
        for row in rows:
            state = _state_of(row)
            if self.is_managed(state.name):
                states[state.name] = state
        return states

    def replace_all(self, states: dict[str, UnitState]) -> None:
        """A new connection's picture: level-based consumers get the whole of it again."""
        self.states = states
        for state in states.values():
            self._emit(state)

    async def read_one(self, name: str) -> UnitState:
        """The unit's state read now (with why it fails, when it does)."""
        bus = self._bus()
        (rows,) = await bus.call("ListUnitsByNames", "as", [[name]])
        state = _state_of(rows[0])
        if state.needs_details:
            current = self.states.get(name)
            if current is not None and current.detailed and state.same_as(current):
                state = current
            else:
                state = await self.with_details(state, bus)
        if self.is_managed(name):
            self.update(state)
        return state

    async def read_loaded(self, bus: SystemdBus, names: Iterable[str]) -> None:
        """Read what systemd made of files it just linked and reloaded (this loads them): a
        file it rejects shows up at once as load=bad-setting/error, and later signals apply to
        known states."""
        loadable = sorted(n for n in names if not parse_name(n).is_template)
        if loadable:
            try:
                (rows,) = await bus.call("ListUnitsByNames", "as", [loadable], queued=False)
            except TemporaryError as exc:
                log.warning("systemd.state_read_failed", error=str(exc))
                return
            for row in rows:
                if self.is_managed(row[0]):
                    self.update(_state_of(row))

    def changes(self, replay: bool = True) -> UnitChanges:
        """A new stream of state changes of managed units (first the known states, if replay)."""
        stream = UnitChanges(self._subscribers)
        self._subscribers.add(stream)
        if replay:
            for state in sorted(self.states.values(), key=lambda s: s.name):
                stream.push(state)
        return stream

    def changed(self, event: UnitChanged) -> None:
        """A `PropertiesChanged` of a unit; one missing a field is completed by a read."""
        if not self.is_managed(event.unit):
            return
        old = self.states.get(event.unit)
        changed = event.changed
        load = changed.get("LoadState", old.load if old else None)
        active = changed.get("ActiveState", old.active if old else None)
        sub = changed.get("SubState", old.sub if old else None)
        if load is None or active is None or sub is None:
            self._spawn(self.read_one(event.unit))
            return
        self.update(UnitState(event.unit, load, active, sub))

    def update(self, state: UnitState) -> None:
        """Record a state read or signalled; a failed or unloadable one is emitted only once its
        details (Result=, the failed process, the load error) are read, so every consumer sees
        why at the same time as the failure."""
        current = self.states.get(state.name)
        if state.same_as(current) and current is not None and current.needs_details:
            return  # the same failure, read again: keep its details (or their pending read)
        if current == state:
            return
        self.states[state.name] = state
        if state.needs_details and not state.detailed:
            self._spawn(self._complete(state))
        else:
            self._emit(state)

    async def _complete(self, state: UnitState) -> None:
        try:
            detailed = await self.with_details(state, self._bus())
        except TemporaryError:
            detailed = state
        except SystemdError as exc:  # the unit went away meanwhile: emit what is known
            log.warning("systemd.details_failed", unit=state.name, error=exc.text)
            detailed = state
        if self.states.get(state.name) is state:  # no newer state arrived meanwhile
            self.states[state.name] = detailed
            self._emit(detailed)

    async def with_details(self, state: UnitState, bus: SystemdBus) -> UnitState:
        """`state` with why it failed or cannot load, read from systemd (one or two calls)."""
        result = exit_ = load_error = ""
        if state.load in BAD_LOAD_STATES:
            error = await bus.get_property(state.name, UNIT_IFACE, "LoadError")
            if isinstance(error, list | tuple) and len(error) == 2:
                load_error = str(error[1] or error[0])
        iface = RESULT_IFACES.get(state.name.rpartition(".")[2])
        if state.active == "failed" and iface is not None:
            props = await bus.get_all(state.name, iface)
            result = str(props.get("Result") or "")
            exit_ = failed_process(props) if iface.endswith("Service") else ""
        return UnitState(state.name, state.load, state.active, state.sub, result, exit_, load_error)

    def _emit(self, state: UnitState) -> None:
        log.debug(
            "systemd.unit_state",
            unit=state.name,
            load=state.load,
            active=state.active,
            sub=state.sub,
        )
        for stream in list(self._subscribers):
            stream.push(state)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("systemd.refresh_failed", error=str(t.exception()))

        task.add_done_callback(done)

    def pending(self) -> list[asyncio.Task[Any]]:
        """The reads still completing a state (awaited on close)."""
        return list(self._tasks)
