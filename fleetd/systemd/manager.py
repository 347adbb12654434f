"""`SystemdManager`: the facade the agent uses to run units through systemd.

Unit files go into the units directory it owns; they are linked with
`LinkUnitFiles(runtime=true, force=true)` and made known with one coalesced `Reload` for every
batch of concurrent loads/unloads. Starts and stops wait on their job's `JobRemoved`. State changes
of the units it manages (files in its units dir, and instances of templates there) arrive pushed,
from `Subscribe()` + `PropertiesChanged`, on `changes()` streams. When the bus drops it reconnects
(capped backoff), re-subscribes and re-emits current states; on start it adopts what systemd
already runs without restarting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from fleetd.systemd.failure import BAD_LOAD_STATES, RESULT_IFACES, failed_process
from fleetd.systemd.journal import JournalStream
from fleetd.systemd.status import unit_status
from fleetd.systemd.unitdir import UnitDir
from fleetd.unit import UnitFile, UnitNameError, parse_name

log = structlog.get_logger(__name__)

Wrapper = Callable[[Sequence[str]], list[str]]

LOAD_FAILED = "load-failed"  # start_unit's result when systemd cannot load the unit


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
            other.load, other.active, other.sub)

    @property
    def needs_details(self) -> bool:
        return self.active == "failed" or self.load in BAD_LOAD_STATES

    @property
    def detailed(self) -> bool:
        return bool(self.result or self.exit or self.load_error)


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


@dataclass
class _Batch:
    """Links and unlinks that share one Reload."""

    link: dict[str, Path] = field(default_factory=dict)
    unlink: set[str] = field(default_factory=set)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class UnitChanges:
    """One subscriber's stream of UnitState changes (`async for state in changes: ...`)."""

    def __init__(self, manager: SystemdManager) -> None:
        self._manager = manager
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
        self._manager._subscribers.discard(self)


def _log_death(task: asyncio.Task[None]) -> None:
    """A guarded background task never dies silently."""
    if not task.cancelled() and task.exception() is not None:
        log.error("systemd.task_died", task=task.get_name(), error=repr(task.exception()))


class SystemdManager:
    def __init__(self, config: SystemdConfig | None = None) -> None:
        self.config = config or SystemdConfig()
        self.units = UnitDir(self.config.units_dir)
        self.reload_count = 0  # Reload calls made (coalescing is visible here)
        self.connect_count = 0
        self._bus: SystemdBus | None = None
        self._states: dict[str, UnitState] = {}
        self._files: set[str] = set()
        self._subscribers: set[UnitChanges] = set()
        self._batch: _Batch | None = None
        self._reload_lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()
        self._job_waiters: dict[str, list[asyncio.Future[str]]] = {}  # merged jobs: many
        self._job_results: dict[str, tuple[str, str]] = {}  # job -> (unit, result)
        self._inflight: Counter[str] = Counter()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.adopted: dict[str, UnitState] = {}  # the states found by start()

    # -- life cycle

    async def __aenter__(self) -> SystemdManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> dict[str, UnitState]:
        """Connect, subscribe and adopt: read what systemd runs for us; restart nothing."""
        self._files = set(self.units.names())
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(), name="systemd-bus-supervisor")
        self._supervisor.add_done_callback(_log_death)
        self.adopted = dict(self._states)
        log.info(
            "systemd.adopted", units=len(self._states), bus=self.config.bus_address or "system",
            running=sum(s.active == "active" for s in self._states.values()),
        )
        return dict(self._states)

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._flushes):
            with contextlib.suppress(Exception):
                await task
        if self._bus is not None:
            self._bus.disconnect()
            await self._bus.wait_disconnected()
        self._fail_waiters(BusUnavailable("adapter closed"))
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
            states = await self._read_states()
            for name, state in states.items():
                if state.needs_details:
                    states[name] = await self._with_details(state, bus)
        except BaseException:
            bus.disconnect()
            raise
        self._states = states
        for state in states.values():  # level-based consumers get the whole picture again
            self._emit(state)

    async def _supervise(self) -> None:
        """Reconnect whenever the bus drops, with a capped backoff between attempts."""
        backoff_cap = self.config.reconnect_backoff_cap
        while True:
            assert self._bus is not None
            await self._bus.wait_disconnected()
            if self._closing:
                return
            log.warning("systemd.bus_lost", bus=self.config.bus_address or "system")
            self._fail_waiters(BusUnavailable("bus connection lost"))
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
                log.info("systemd.bus_reconnected", units=len(self._states))
                break

    def _fail_waiters(self, exc: Exception) -> None:
        for futures in self._job_waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)
        self._job_waiters.clear()

    def _require_bus(self) -> SystemdBus:
        if self._bus is None or not self._bus.connected:
            raise BusUnavailable("not connected to systemd")
        return self._bus

    # -- managed units and their states

    def is_managed(self, name: str) -> bool:
        if name in self._files:
            return True
        try:
            parsed = parse_name(name)
        except UnitNameError:
            return False
        return parsed.is_instance and parsed.template in self._files

    async def _read_states(self) -> dict[str, UnitState]:
        bus = self._require_bus()
        names = sorted(n for n in self._files if not parse_name(n).is_template)
        rows: list[Any] = []
        if names:
            (rows,) = await bus.call("ListUnitsByNames", "as", [names])
        templates = sorted(n for n in self._files if parse_name(n).is_template)
        if templates:  # instances of our templates that systemd has loaded
            patterns = [n.replace("@.", "@*.") for n in templates]
            (more,) = await bus.call("ListUnitsByPatterns", "asas", [[], patterns])
            rows += more
        states = {}
        for row in rows:
            state = UnitState(row[0], row[2], row[3], row[4])
            if self.is_managed(state.name):
                states[state.name] = state
        return states

    async def states(self) -> dict[str, UnitState]:
        """Current (load, active, sub) of every managed unit, read from systemd."""
        self._files = set(self.units.names())
        states = await self._read_states()
        for state in states.values():
            self._update(state)
        return states

    async def unit_state(self, name: str) -> UnitState:
        """The unit's state read now (with why it fails, when it does)."""
        bus = self._require_bus()
        (rows,) = await bus.call("ListUnitsByNames", "as", [[name]])
        row = rows[0]
        state = UnitState(row[0], row[2], row[3], row[4])
        if state.needs_details:
            current = self._states.get(name)
            if current is not None and current.detailed and state.same_as(current):
                state = current
            else:
                state = await self._with_details(state, bus)
        if self.is_managed(name):
            self._update(state)
        return state

    def changes(self, replay: bool = True) -> UnitChanges:
        """A new stream of state changes of managed units (first the known states, if replay)."""
        stream = UnitChanges(self)
        self._subscribers.add(stream)
        if replay:
            for state in sorted(self._states.values(), key=lambda s: s.name):
                stream.push(state)
        return stream

    def _update(self, state: UnitState) -> None:
        """Record a state read or signalled; a failed or unloadable one is emitted only once its
        details (Result=, the failed process, the load error) are read, so every consumer sees
        why at the same time as the failure."""
        current = self._states.get(state.name)
        if state.same_as(current) and current is not None and current.needs_details:
            return  # the same failure, read again: keep its details (or their pending read)
        if current == state:
            return
        self._states[state.name] = state
        if state.needs_details and not state.detailed:
            self._spawn(self._complete(state))
        else:
            self._emit(state)

    async def _complete(self, state: UnitState) -> None:
        try:
            detailed = await self._with_details(state, self._require_bus())
        except TemporaryError:
            detailed = state
        except SystemdError as exc:  # the unit went away meanwhile: emit what is known
            log.warning("systemd.details_failed", unit=state.name, error=exc.text)
            detailed = state
        if self._states.get(state.name) is state:  # no newer state arrived meanwhile
            self._states[state.name] = detailed
            self._emit(detailed)

    async def _with_details(self, state: UnitState, bus: SystemdBus) -> UnitState:
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
        return UnitState(
            state.name, state.load, state.active, state.sub, result, exit_, load_error
        )

    def _emit(self, state: UnitState) -> None:
        log.debug("systemd.unit_state", unit=state.name, load=state.load, active=state.active,
                  sub=state.sub)
        for stream in list(self._subscribers):
            stream.push(state)

    def _on_signal(self, event: Signal) -> None:
        if isinstance(event, JobRemoved):
            for fut in self._job_waiters.pop(event.job, ()):
                if not fut.done():
                    fut.set_result(event.result)
            if self._inflight[event.unit]:  # removed before StartUnit's caller saw the path
                self._job_results[event.job] = (event.unit, event.result)
        elif isinstance(event, UnitChanged) and self.is_managed(event.unit):
            old = self._states.get(event.unit)
            changed = event.changed
            load = changed.get("LoadState", old.load if old else None)
            active = changed.get("ActiveState", old.active if old else None)
            sub = changed.get("SubState", old.sub if old else None)
            if load is None or active is None or sub is None:
                self._spawn(self.unit_state(event.unit))
                return
            self._update(UnitState(event.unit, load, active, sub))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._flushes.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._flushes.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("systemd.refresh_failed", error=str(t.exception()))

        task.add_done_callback(done)

    # -- unit files: write, link, unlink, with one Reload per batch

    def write(self, name: str, unit: UnitFile | str) -> Path:
        """Write the unit file (atomically) without telling systemd."""
        path = self.units.write(name, unit)
        self._files.add(name)
        return path

    async def load(self, name: str, unit: UnitFile | str) -> None:
        """Write, link and reload (the reload shared with concurrent loads/unloads)."""
        await self.load_many({name: unit})

    async def load_many(self, units: Mapping[str, UnitFile | str]) -> None:
        paths = {name: self.write(name, unit) for name, unit in units.items()}
        await self._join_batch(link=paths)
        log.info("systemd.units_loaded", units=sorted(paths))

    async def link(self, names: Iterable[str]) -> None:
        """Link files already in the units dir, then reload (coalesced)."""
        await self._join_batch(link={n: self.units.path_of(n) for n in names})

    async def unload(self, name: str) -> None:
        """Unlink (DisableUnitFiles runtime), remove the file, reload (coalesced)."""
        self.units.path_of(name)  # validates
        await self._join_batch(unlink={name})
        self.units.remove(name)
        self._files.discard(name)
        self._states.pop(name, None)
        log.info("systemd.unit_unloaded", unit=name)

    async def _join_batch(
        self, link: Mapping[str, Path] | None = None, unlink: set[str] | None = None
    ) -> None:
        if self._batch is None:
            self._batch = _Batch()
            task = asyncio.create_task(self._flush(), name="systemd-reload")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        batch = self._batch
        for name, path in (link or {}).items():
            batch.unlink.discard(name)
            batch.link[name] = path
        for name in unlink or ():
            batch.link.pop(name, None)
            batch.unlink.add(name)
        await asyncio.shield(batch.done)

    async def _flush(self) -> None:
        async with self._reload_lock:
            batch, self._batch = self._batch, None
            assert batch is not None
            try:
                bus = self._require_bus()
                if batch.unlink:
                    await bus.call("DisableUnitFiles", "asb", [sorted(batch.unlink), True])
                if batch.link:
                    await bus.call(
                        "LinkUnitFiles", "asbb",
                        [[str(p) for _, p in sorted(batch.link.items())], True, True],
                    )
                self.reload_count += 1
                await bus.call("Reload")
            except Exception as exc:
                batch.done.set_exception(exc)
                batch.done.exception()  # retrieved: each caller re-raises it from the shield
                return
            log.info("systemd.reloaded", linked=len(batch.link), unlinked=len(batch.unlink))
            batch.done.set_result(None)
            # Read what systemd made of the linked files (this loads them): a file it rejects
            # shows up at once as load=bad-setting/error, and later signals apply to known states.
            loadable = sorted(n for n in batch.link if not parse_name(n).is_template)
            if loadable:
                try:
                    (rows,) = await bus.call("ListUnitsByNames", "as", [loadable])
                except TemporaryError as exc:
                    log.warning("systemd.state_read_failed", error=str(exc))
                    return
                for row in rows:
                    if self.is_managed(row[0]):
                        self._update(UnitState(row[0], row[2], row[3], row[4]))

    # -- jobs

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
        self._inflight[name] += 1
        try:
            try:
                (job,) = await bus.call(method, "ss", [name, "replace"])
            except SystemdError as exc:
                if not exc.is_load_error:
                    raise
                state = await self.unit_state(name)
                log.warning("systemd.unit_load_failed", unit=name, method=method,
                            load=state.load, error=exc.text)
                return LOAD_FAILED
            if job in self._job_results:  # kept until no call for this unit is in flight
                result = self._job_results[job][1]
            else:
                fut = asyncio.get_running_loop().create_future()
                self._job_waiters.setdefault(job, []).append(fut)
                try:
                    result = await asyncio.wait_for(fut, self.config.job_timeout)
                except TimeoutError as exc:
                    raise TemporaryError(f"{method} {name}: job {job} did not finish") from exc
                finally:
                    waiters = self._job_waiters.get(job, [])
                    if fut in waiters:
                        waiters.remove(fut)
                    if not waiters:
                        self._job_waiters.pop(job, None)
        finally:
            self._inflight[name] -= 1
            if not self._inflight[name]:
                del self._inflight[name]
                for j in [j for j, (u, _) in self._job_results.items() if u == name]:
                    del self._job_results[j]
        event = "systemd.unit_started" if method == "StartUnit" else (
            "systemd.unit_stopped" if method == "StopUnit" else "systemd.unit_restarted")
        log.info(event, unit=name, job=job, result=result)
        return result

    # -- properties, journal, status

    async def main_pid(self, name: str) -> int:
        return int(await self._require_bus().get_property(name, SERVICE_IFACE, "MainPID"))

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
            name, user=self.config.user_manager, lines=lines, wrap=self.config.wrap,
            env=self.config.env,
        )
