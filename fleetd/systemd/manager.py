"""`SystemdManager`: the facade the agent uses to run units through systemd.

Unit files go into the units directory it owns; they are linked with
`LinkUnitFiles(runtime=true, force=true)` and made known with one coalesced `Reload` for every
batch of concurrent loads/unloads. Starts and stops wait on their job's `JobRemoved`. State changes
of the units it manages (files in its units dir, and instances of templates there) arrive pushed,
from `Subscribe()` + `PropertiesChanged`, on `changes()` streams. When the bus drops it reconnects
(capped backoff), re-subscribes and re-emits current states; on start it adopts what systemd
already runs without restarting anything.

This module holds the connection and its life cycle and routes the signals; each role has its
own room: `reloads.py` (the batches sharing one Reload), `jobs.py` (a job matched with its
`JobRemoved`), `states.py` (managed units, their states and the subscribers' streams).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from fleetd.errors import TemporaryError
from fleetd.systemd.dbus import (
    MANAGER_IFACE,
    PROPS_IFACE,
    SERVICE_IFACE,
    SYSTEMD,
    UNIT_IFACE,
    UNIT_PATH_PREFIX,
    BusUnavailable,
    JobRemoved,
    Signal,
    SystemdBus,
    SystemdError,
    UnitChanged,
)
from fleetd.systemd.jobs import Jobs
from fleetd.systemd.journal import JournalStream
from fleetd.systemd.reloads import Reloads
from fleetd.systemd.states import ManagedUnits, UnitChanges, UnitState
from fleetd.systemd.status import unit_status
from fleetd.systemd.unitdir import UnitDir
from fleetd.unit import UnitFile, parse_name

log = structlog.get_logger(__name__)

Wrapper = Callable[[Sequence[str]], list[str]]

LOAD_FAILED = "load-failed"  # start_unit's result when systemd cannot load the unit


@dataclass(frozen=True)
class SystemdConfig:
    """Where systemd is and how to reach its tools.

    bus_address None means the system bus (production); a `unix:path=...` address means a
    `systemd --user` manager on a private bus (sandbox, tests), and then `systemctl`/`journalctl`
    run with `--user` semantics unless `user` says otherwise. `wrap` and `env` run those tools
    somewhere else (e.g. inside a sandbox machine's mount namespace).
    """

    bus_address: str | None = None
    units_dir: Path = Path("/run/fleet/units")
    user: bool | None = None
    wrap: Wrapper | None = None
    env: Mapping[str, str] | None = None
    job_timeout: float = 120.0
    reconnect_backoff_cap: float = 5.0

    @property
    def user_manager(self) -> bool:
        return self.bus_address is not None if self.user is None else self.user


def _log_death(task: asyncio.Task[None]) -> None:
    """A guarded background task never dies silently."""
    if not task.cancelled() and task.exception() is not None:
        log.error("systemd.task_died", task=task.get_name(), error=repr(task.exception()))


class SystemdManager:
    def __init__(self, config: SystemdConfig | None = None) -> None:
        self.config = config or SystemdConfig()
        self.units = UnitDir(self.config.units_dir)
        self.connect_count = 0
        self._bus: SystemdBus | None = None
        self._managed = ManagedUnits(self._require_bus)
        self._reloads = Reloads(self._require_bus, self._managed.read_loaded)
        # files written over one systemd may have loaded, not linked since: their link reloads
        self._replaced: set[str] = set()
        self._jobs = Jobs(self.config.job_timeout)
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.adopted: dict[str, UnitState] = {}  # the states found by start()

    @property
    def reload_count(self) -> int:
        """Reload calls made (coalescing is visible here)."""
        return self._reloads.count

    # -- life cycle

    async def __aenter__(self) -> SystemdManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> dict[str, UnitState]:
        """Connect, subscribe and adopt: read what systemd runs for us; restart nothing."""
        self._managed.files = set(self.units.names())
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(), name="systemd-bus-supervisor")
        self._supervisor.add_done_callback(_log_death)
        states = self._managed.states
        self.adopted = dict(states)
        log.info(
            "systemd.adopted",
            units=len(states),
            bus=self.config.bus_address or "system",
            running=sum(s.active == "active" for s in states.values()),
        )
        return dict(states)

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in self._reloads.pending() + self._managed.pending():
            with contextlib.suppress(Exception):
                await task
        if self._bus is not None:
            self._bus.disconnect()
            await self._bus.wait_disconnected()
        self._jobs.fail(BusUnavailable("adapter closed"))
        log.info("systemd.closed")

    async def _connect(self) -> None:
        bus = await SystemdBus.connect(self.config.bus_address)
        try:
            bus.on_signal(self._on_signal)
            await bus.add_match(
                f"type='signal',sender='{SYSTEMD}',interface='{MANAGER_IFACE}',member='JobRemoved'"
            )
            await bus.add_match(
                f"type='signal',sender='{SYSTEMD}',interface='{PROPS_IFACE}',"
                f"member='PropertiesChanged',path_namespace='{UNIT_PATH_PREFIX.rstrip('/')}',"
                f"arg0='{UNIT_IFACE}'"  # not the Service/Socket/... property changes
            )
            await bus.call("Subscribe")
            self._bus = bus
            self.connect_count += 1
            states = await self._managed.read()
            for name, state in states.items():
                if state.needs_details:
                    states[name] = await self._managed.with_details(state, bus)
        except BaseException:
            bus.disconnect()
            raise
        self._managed.replace_all(states)

    async def _supervise(self) -> None:
        """Reconnect whenever the bus drops, with a capped backoff between attempts."""
        backoff_cap = self.config.reconnect_backoff_cap
        while True:
            assert self._bus is not None
            await self._bus.wait_disconnected()
            if self._closing:
                return
            log.warning("systemd.bus_lost", bus=self.config.bus_address or "system")
            self._jobs.fail(BusUnavailable("bus connection lost"))
            delay = 0.05
            while True:
                try:
                    await self._connect()
                except TemporaryError as exc:
                    log.warning("systemd.reconnect_failed", error=str(exc), retry_in=delay)
                    await asyncio.sleep(delay)  # capped reconnect backoff, not a state poll
                    delay = min(delay * 2, backoff_cap)
                    continue
                except Exception:
                    log.exception("systemd.reconnect_crashed")
                    await asyncio.sleep(backoff_cap)  # capped reconnect backoff
                    continue
                log.info("systemd.bus_reconnected", units=len(self._managed.states))
                break

    def _require_bus(self) -> SystemdBus:
        if self._bus is None or not self._bus.connected:
            raise BusUnavailable("not connected to systemd")
        return self._bus

    def _on_signal(self, event: Signal) -> None:
        if isinstance(event, JobRemoved):
            self._jobs.removed(event)
        elif isinstance(event, UnitChanged):
            self._managed.changed(event)

    # -- managed units and their states (fleetd/systemd/states.py)

    def is_managed(self, name: str) -> bool:
        return self._managed.is_managed(name)

    async def states(self) -> dict[str, UnitState]:
        """Current (load, active, sub) of every managed unit, read from systemd."""
        self._managed.files = set(self.units.names())
        states = await self._managed.read()
        for state in states.values():
            self._managed.update(state)
        return states

    async def unit_state(self, name: str) -> UnitState:
        """The unit's state read now (with why it fails, when it does)."""
        return await self._managed.read_one(name)

    def changes(self, replay: bool = True) -> UnitChanges:
        """A new stream of state changes of managed units (first the known states, if replay)."""
        return self._managed.changes(replay)

    # -- unit files: write, link, unlink, with one Reload per batch (fleetd/systemd/reloads.py)

    def write(self, name: str, unit: UnitFile | str) -> Path:
        """Write the unit file (atomically) without telling systemd."""
        if name in self._managed.files:
            self._replaced.add(name)  # systemd may have loaded the file written over
        path = self.units.write(name, unit)
        self._managed.files.add(name)
        return path

    async def load(self, name: str, unit: UnitFile | str) -> None:
        """Write, link and reload (the reload shared with concurrent loads/unloads)."""
        await self.load_many({name: unit})

    async def load_many(self, units: Mapping[str, UnitFile | str]) -> None:
        paths = {name: self.write(name, unit) for name, unit in units.items()}
        await self._join_links(paths)
        log.info("systemd.units_loaded", units=sorted(paths))

    async def link(self, names: Iterable[str]) -> None:
        """Link files already in the units dir, then reload (coalesced) when one of them
        replaced a file systemd may have loaded (a new unit needs none)."""
        await self._join_links({n: self.units.path_of(n) for n in names})

    async def _join_links(self, paths: Mapping[str, Path]) -> None:
        replaced = self._replaced & paths.keys()
        await self._reloads.join(link=paths, reload=bool(replaced))
        self._replaced -= replaced

    async def unload(self, name: str) -> None:
        """Unlink (DisableUnitFiles runtime), remove the file, reload (coalesced)."""
        self.units.path_of(name)  # validates
        await self._reloads.join(unlink={name})
        self.units.remove(name)
        self._managed.files.discard(name)
        self._managed.states.pop(name, None)
        log.info("systemd.unit_unloaded", unit=name)

    # -- jobs (fleetd/systemd/jobs.py)

    async def start_unit(self, name: str) -> str:
        """StartUnit(name, "replace") and wait for its job: the job result ("done", "failed",
        ...), or LOAD_FAILED when systemd cannot load the unit (its state says why)."""
        return await self._job("StartUnit", name)

    async def stop_unit(self, name: str) -> str:
        return await self._job("StopUnit", name)

    async def restart_unit(self, name: str) -> str:
        return await self._job("RestartUnit", name)

    async def reset_failed(self, name: str) -> None:
        """`ResetFailedUnit`: a failed unit becomes inactive (and forgets why it failed)."""
        parse_name(name)
        try:
            await self._require_bus().call("ResetFailedUnit", "s", [name])
        except SystemdError as exc:
            if not exc.is_load_error:  # a unit systemd no longer knows has nothing to reset
                raise
        log.info("systemd.unit_reset_failed", unit=name)

    async def _job(self, method: str, name: str) -> str:
        parse_name(name)
        bus = self._require_bus()
        with self._jobs.in_flight(name):
            try:
                (job,) = await bus.call(method, "ss", [name, "replace"])
            except SystemdError as exc:
                if not exc.is_load_error:
                    raise
                state = await self.unit_state(name)
                log.warning(
                    "systemd.unit_load_failed",
                    unit=name,
                    method=method,
                    load=state.load,
                    error=exc.text,
                )
                return LOAD_FAILED
            result = await self._jobs.result(job, f"{method} {name}")
        event = (
            "systemd.unit_started"
            if method == "StartUnit"
            else ("systemd.unit_stopped" if method == "StopUnit" else "systemd.unit_restarted")
        )
        log.info(event, unit=name, job=job, result=result)
        return result

    # -- properties, journal, status

    async def main_pid(self, name: str) -> int:
        return int(await self._require_bus().get_property(name, SERVICE_IFACE, "MainPID"))

    async def n_restarts(self, name: str) -> int:
        """How many times systemd restarted the service on its own (`Restart=`): the service's
        `NRestarts` property."""
        parse_name(name)
        return int(await self._require_bus().get_property(name, SERVICE_IFACE, "NRestarts"))

    def journal(
        self, name: str, *, lines: int | None = None, follow: bool = False
    ) -> JournalStream:
        parse_name(name)
        return JournalStream(
            name, lines=lines, follow=follow, wrap=self.config.wrap, env=self.config.env
        )

    async def status(self, name: str, lines: int = 10) -> str:
        parse_name(name)
        return await unit_status(
            name,
            user=self.config.user_manager,
            lines=lines,
            wrap=self.config.wrap,
            env=self.config.env,
        )
