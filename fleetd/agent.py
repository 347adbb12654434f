"""The agent shell: this machine's membership, and the units placed on it, run by its systemd.

It registers the machine under a lease (kept in the runtime dir, so a restarted fleetd re-attaches
to its still-live lease and nothing fails over), follows the registry's watch and systemd's
pushed state changes, plans with the pure `plan_agent`, applies the tasks through the systemd
adapter, and publishes each unit's state when it really changes (a burst of D-Bus signals is one
put). A rollout pins the units it covers here to a version (`LocalJobs`), and the units a rollout
or a drain judges here have their health judged (`fleetd/gates.py`) and published with their
state. Nothing polls: watch events, D-Bus signals and the lease drive everything; a systemd
action that failed is retried by a plan after a growing delay.

Longer than 400 lines, on purpose: membership, following, applying and publishing share one
record of this machine (the files written, the units started, systemd's states, the restart
tokens done, what was published) that each of them reads and changes under the same lock; the
decisions are already pure (`fleetd/reconcile/`: relevance, plan_agent, publish), and splitting
the shell would only pass that record around.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from contextlib import aclosing
from pathlib import Path

import structlog

from fleetd.errors import FleetdError
from fleetd.gates import HealthGates
from fleetd.leasefile import LeaseFile
from fleetd.metrics import METRICS
from fleetd.model import Machine, UnitState
from fleetd.reconcile.agent import AgentTask, DesiredUnit, Kind, actual_units, plan_agent
from fleetd.reconcile.environment import check_environment
from fleetd.reconcile.gates import Gate, gates_on
from fleetd.reconcile.health import Seen
from fleetd.reconcile.publish import (
    restarts_done_before,
    state_document,
    states_to_publish,
    verdicts_before,
)
from fleetd.reconcile.relevance import LocalJobs
from fleetd.reconcile.states import adopted_as_started
from fleetd.registry import (
    ClusterView,
    EtcdRequestFailed,
    EtcdUnavailable,
    KeyKind,
    Lease,
    Registry,
)
from fleetd.registry.watch import Backoff, retry_unavailable
from fleetd.systemd import SystemdManager
from fleetd.systemd import UnitState as SystemdState
from fleetd.unit import UnitParseError, parse_unit

__all__ = ["Agent"]

log = structlog.get_logger(__name__)

_RETRY_FIRST, _RETRY_CAP = 1.0, 60.0  # seconds: plans after failed systemd actions
# Seconds between two publishes of states while start jobs run here: the first change after a
# quiet moment goes at once, the changes of a burst (hundreds of units whose start jobs end a
# few ms apart) wait for the rest of the spacing, or for the last start job's end, and go
# together: one revision for dozens instead of one each.
_PUBLISH_SPACING = 0.05


class Agent:
    """Runs this machine's share of the cluster until cancelled."""

    def __init__(
        self,
        registry: Registry,
        systemd: SystemdManager,
        machine: Machine,
        *,
        ttl: int = 30,
        runtime_dir: Path | str | None = None,
        fence_on_lease_loss: bool = False,
    ) -> None:
        self.registry = registry
        self.systemd = systemd
        self.machine = machine
        self.ttl = ttl
        self.runtime_dir = Path(runtime_dir) if runtime_dir else None
        self._lease_file = LeaseFile(self.runtime_dir / "lease" if self.runtime_dir else None)
        self.fence_on_lease_loss = fence_on_lease_loss
        self.lease: Lease | None = None
        self.registered = asyncio.Event()
        self.left = asyncio.Event()  # the machine left on purpose: it never registers again
        self.fenced = False
        self.plans = 0
        self._view: ClusterView | None = None
        self._dirty = asyncio.Event()  # the desired or actual state changed: plan again
        self._kept_off: dict[str, str] = {}  # Global units kept off this machine, reported
        self._publish_dirty = asyncio.Event()  # some unit state may need publishing
        self._to_publish: set[str] | None = None  # which units' states may have changed (None: any)
        self._hashes: dict[str, str] = {}  # unit file in the units dir → its content hash
        self._started: set[str] = set()  # units we started (or adopted running or failed)
        # units whose start job is running: the plans go on meanwhile (a burst of units placed
        # here is not held behind the starts of the first ones), and take them as started
        self._starting: set[str] = set()
        self._no_starts = asyncio.Event()  # set while no start job runs here
        self._no_starts.set()
        self._background: set[asyncio.Task[None]] = set()
        # units on their way out (stopped to be unloaded): their last states are not published
        self._going: set[str] = set()
        # unit → token of the last restart request done here (published in its UnitState)
        self._restarted: dict[str, str] = {}
        self._states: dict[str, SystemdState] = {}  # what systemd says, pushed
        self._published: dict[str, UnitState] = {}
        self._jobs: dict[str, str] = {}  # result of the last start job run here, per unit
        self._local = LocalJobs(machine.id)  # the jobs placed here and the Global ones
        self._applied = asyncio.Condition()
        self._acting = asyncio.Lock()  # one plan applied at a time; leave/fence wait for it
        self._leaving = False
        self._failed = False  # a systemd action of the plan being applied failed
        self._retry = _RETRY_FIRST  # seconds until a plan after a failed action
        self._retrying: asyncio.TimerHandle | None = None
        # the units a rollout or a drain judges here, and the last verdict of each
        self._health = HealthGates(systemd, machine.id, self._mark_publish)

    # ---- life cycle

    async def run(self) -> None:
        """Register, adopt, then keep this machine right, until cancelled."""
        self._adopt_files()
        changes = self.systemd.changes(replay=True)
        try:
            await self._register()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._follow_registry(), name="agent-watch")
                group.create_task(self._follow_systemd(changes), name="agent-systemd")
                group.create_task(self._reconcile(), name="agent-reconcile")
                group.create_task(self._publish(), name="agent-publish")
                group.create_task(self._keep_membership(), name="agent-lease")
        finally:
            self._health.close()
            changes.close()
            if self.lease is not None:
                await self.lease.release()  # stop renewing; keys live on until the TTL ends

    async def leave(self) -> None:
        """Leave the cluster on purpose: stop every local fleet unit, then revoke the lease so
        the engine moves them at once (`fleetd leave`, SIGTERM with leave_on_shutdown)."""
        self._leaving = True
        async with self._acting:
            await asyncio.gather(*(self._stop(name) for name in sorted(self._hashes)))
        if self.lease is not None:
            with contextlib.suppress(EtcdUnavailable):
                await self.lease.revoke()
        self._lease_file.forget()
        log.info("agent.left", machine=self.machine.id, units=len(self._hashes))

    async def update_machine(self, machine: Machine) -> bool:
        """This machine's document changed (SIGHUP: metadata, reservations): write it under the
        lease now. False when not registered at the moment: the next registration writes it."""
        self.machine = machine
        lease = self.lease
        if lease is None or not self.registered.is_set():
            return False
        return await self.registry.update_machine(machine, lease)

    async def wait_applied(self) -> None:
        """Wait until the next plan has been applied (tests)."""
        async with self._applied:
            await self._applied.wait()

    # ---- membership

    async def _register(self) -> None:
        self.lease = await retry_unavailable(
            lambda: self.registry.register_machine(self.machine, self.ttl, self._lease_file.load()),
            "agent.register_retry",
            backoff=Backoff(first=0.1, cap=max(0.2, self.ttl / 3)),
            machine=self.machine.id,
        )
        self._lease_file.save(self.lease.id)
        self._published.clear()  # a new lease carries no states: publish them all again
        self._mark_publish()
        self.registered.set()
        log.info(
            "agent.registered",
            machine=self.machine.id,
            ip=self.machine.public_ip,
            lease=self.lease.id,
            reattached=self.lease.reattached,
        )

    async def _keep_membership(self) -> None:
        """Re-register when the lease is lost; with fencing, stop local units before it expires
        when it cannot be renewed (a deadline timer, not a poll)."""
        while True:
            lease = self.lease
            assert lease is not None
            if self.fence_on_lease_loss and await lease.unrenewed_for(
                self.ttl - min(1.0, self.ttl / 5)  # the margin to stop them before it expires
            ):
                await self._fence()
            await lease.lost.wait()
            self.registered.clear()
            if self._leaving:  # revoked by leave(): registering again would bring it back
                self.left.set()
                log.info("agent.membership_ended", machine=self.machine.id, lease=lease.id)
                return
            log.warning("agent.lease_lost", machine=self.machine.id, lease=lease.id)
            await lease.release()
            await self._register()
            if self.fenced:
                self.fenced = False
                log.info("agent.unfenced", machine=self.machine.id)
            self._dirty.set()

    async def _fence(self) -> None:
        self.fenced = True
        await self._acting.acquire()
        self._acting.release()
        log.warning(
            "agent.fencing",
            machine=self.machine.id,
            reason="the lease could not be renewed before it expires: stopping local units so "
            "they never run twice when the engine places them elsewhere",
            units=sorted(self._hashes),
        )
        await asyncio.gather(*(self._stop(name) for name in sorted(self._hashes)))

    # ---- following the registry and systemd

    async def _follow_registry(self) -> None:
        view = ClusterView()  # this machine's part of the registry only (registry/local.py)
        async with aclosing(self.registry.follow_machine(self.machine.id, view=view)) as updates:
            async for update in updates:
                if not update.events:  # the snapshot we start from
                    first = self._view is None
                    self._view = view
                    if first:  # the restart tokens done here before this fleetd started
                        self._restarted.update(
                            restarts_done_before(view, self.machine.id, self._hashes, self._started)
                        )
                        self._health.keep(verdicts_before(view, self.machine.id, self._hashes))
                        self._mark_publish()  # published once the tokens are known
                # every event is indexed (no short cut): the index must see them all
                relevant = [self._local.note(view, e) for e in update.events or (None,)]
                self._report_refusals()
                if any(relevant):
                    self._dirty.set()

    async def _follow_systemd(self, changes) -> None:  # type: ignore[no-untyped-def]
        connects = self.systemd.connect_count
        async for state in changes:
            before = self._states.get(state.name)
            self._states[state.name] = state
            # after a reconnect the adapter sends every state again: plan again then, even if
            # nothing changed, so the actions that failed while the bus was lost are retried
            reconnected = self.systemd.connect_count != connects
            connects = self.systemd.connect_count
            # (a unit whose start job runs changes as the job goes: nothing to plan for it until
            # the job ends, which a burst of starts would otherwise pay with a plan per signal)
            moved = before is None or before.active != state.active
            if (moved and state.name not in self._starting) or reconnected:
                self._dirty.set()
            self._health.observe(state.name, self._seen(state.name))
            self._mark_publish((state.name,))

    def _adopt_files(self) -> None:
        """Read the units dir: what is here already runs (or not) and is never restarted."""
        for name in self.systemd.units.names():
            text = self.systemd.units.read(name)
            if text is None:
                continue
            try:
                self._hashes[name] = parse_unit(text).hash
            except UnitParseError:
                self._hashes[name] = ""  # unreadable: it will be replaced or removed
        for name, state in self.systemd.adopted.items():
            if adopted_as_started(state.active):
                self._started.add(name)
        if self._hashes:
            log.info("agent.adopted", machine=self.machine.id, units=sorted(self._hashes))

    # ---- planning and applying

    def _desired(self) -> dict[str, DesiredUnit]:
        """What this machine should hold, from the jobs placed here and the Global ones only
        (indexed as events arrive): a plan costs what this machine holds, not the cluster."""
        assert self._view is not None
        desired = self._local.desired(self._view, self.machine.metadata)
        self._report_refusals()
        self._report_kept_off(self._local.kept_off)
        return desired

    def _report_kept_off(self, kept_off: dict[str, str]) -> None:
        """A Global unit this machine does not run is said so, once per reason (`fleetctl why`
        shows it too): never skipped silently."""
        for name, why in kept_off.items():
            if self._kept_off.get(name) != why:
                log.info(
                    "agent.global_unit_kept_off", unit=name, machine=self.machine.id, reason=why
                )
        self._kept_off = dict(kept_off)

    def _report_refusals(self) -> None:
        """A job written to etcd by something else than the API may have a name that is no
        file name (``../x.service``): it is refused once, with a warning, instead of ending
        the agent."""
        for name, error in self._local.take_refusals():
            log.warning("agent.unit_name_refused", unit=name, machine=self.machine.id, error=error)

    async def _reconcile(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._view is None or self.fenced or self._leaving or not self.registered.is_set():
                continue
            async with self._acting:
                started = self._started | self._starting
                actual = actual_units(self._hashes, self._states, started, self._restarted)
                tasks = plan_agent(self._desired(), actual)
                self.plans += 1
                if tasks:
                    self._failed = False
                    await self._apply(tasks)
                    self._retry_if_failed()
                self._judge()
            async with self._applied:
                self._applied.notify_all()

    def _judge(self) -> None:
        """The units a rollout or a drain judges here now (their gates started, ended or
        replaced), each told what the agent sees of it after the plan."""
        view = self._view
        assert view is not None
        gates = (
            gates_on(view, self.machine.id, self._local.policies)
            if view.rollouts or view.cordons
            else {}
        )
        self._health.follow(gates, self._seen, self._environment)

    def _seen(self, name: str) -> Seen:
        """What the agent knows of a unit, as a health gate judges it."""
        state = self._states.get(name)
        return Seen(
            self._hashes.get(name, ""),
            name in self._started,
            self._restarted.get(name, ""),
            state.active if state else "inactive",
            state.sub if state else "dead",
            state.result if state else "",
            state.exit if state else "",
        )

    def _environment(self, name: str, gate: Gate) -> dict[str, str]:
        """The environment of the unit's health check: that of the content judged."""
        assert self._view is not None
        content = self._view.units.get(gate.hash)
        return check_environment(content.unit if content else None, name, self.machine.id)

    async def _apply(self, tasks: list[AgentTask]) -> None:
        by_kind: dict[Kind, list[AgentTask]] = {}
        for task in self._writable(tasks):
            by_kind.setdefault(task.kind, []).append(task)
            METRICS.inc("fleetd_agent_tasks_total", kind=task.kind.name.lower())
            log.info(
                f"agent.{task.kind.name.lower()}",
                unit=task.unit,
                machine=self.machine.id,
                reason=task.reason.value,
                **({"token": task.token} if task.token else {}),
            )
        unlinks = by_kind.get(Kind.UNLINK, [])
        self._going |= {t.unit for t in unlinks}
        await asyncio.gather(*(self._stop(t.unit) for t in by_kind.get(Kind.STOP, [])))
        await asyncio.gather(*(self._unload(t.unit) for t in unlinks))
        self._going.difference_update(t.unit for t in unlinks)  # (one not unloaded stays)
        await self._unpublish([t.unit for t in unlinks if t.unit not in self._hashes])
        # a WRITE is the file and its link; the adapter reloads once for all links and unlinks
        written = [t.unit for t in by_kind.get(Kind.WRITE, []) if self._write(t)]
        unknown = set() if not written or await self._link(written) else set(written)
        for task in by_kind.get(Kind.START, []):
            if task.unit not in unknown:
                self._begin_start(task.unit, task.token)
        restarts = by_kind.get(Kind.RESTART, [])
        await asyncio.gather(*(self._restart(t.unit, t.token) for t in restarts))
        self._mark_publish(t.unit for t in tasks)

    def _begin_start(self, name: str, token: str) -> None:
        """Start a unit without holding the plans behind its job (it counts as started
        meanwhile, so no plan starts it twice); its end is published, and a failed call is
        retried by a later plan as any failed action."""
        self._starting.add(name)
        self._no_starts.clear()

        async def start() -> None:
            try:
                called = await self._start(name, token)
            finally:
                self._starting.discard(name)
                if not self._starting:
                    self._no_starts.set()
                self._mark_publish((name,))
            self._health.observe(name, self._seen(name))  # a gate waits for it started
            if not called:
                self._failed = True
                self._retry_if_failed()

        task = asyncio.create_task(start(), name=f"agent-start-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _writable(self, tasks: list[AgentTask]) -> list[AgentTask]:
        """The tasks of the units whose new content is known: a unit whose file cannot be
        written yet (its content has not been read) is left as it is, not stopped and started
        again on its old file; the plan after the content comes does it."""
        view = self._view
        assert view is not None
        waiting = {t.unit for t in tasks if t.kind is Kind.WRITE and t.hash not in view.units}
        return [t for t in tasks if t.unit not in waiting]

    def _write(self, task: AgentTask) -> bool:
        view = self._view
        assert view is not None
        content = view.units.get(task.hash)
        if content is None:
            return False  # the content vanished (destroyed meanwhile): the next plan drops it
        self.systemd.write(task.unit, content.unit)
        self._hashes[task.unit] = task.hash
        self._started.discard(task.unit)
        self._jobs.pop(task.unit, None)
        return True

    async def _link(self, names: list[str]) -> bool:
        """Link the files just written (one reload for all). When that fails systemd does not
        know them: they are forgotten, so the next plan writes and links them again, and none is
        started now (its start would fail as not-found and pass for the unit's own failure)."""
        if await self._guard("link", self.systemd.link(names), names, done=True):
            return True
        for name in names:
            self._hashes.pop(name, None)
        return False

    async def _start(self, name: str, token: str = "") -> bool:
        """Start a unit and wait for its job; whether the call could be made."""
        result = await self._guard("start", self.systemd.start_unit(name), [name])
        if result is not None:
            self._started.add(name)
            if token:  # started after the restart was asked: that request is done
                self._restarted[name] = token
            if result != "done":  # why systemd gave up on it: failed, dependency, timeout...
                self._jobs[name] = result
                self._mark_publish((name,))
        return result is not None

    async def _restart(self, name: str, token: str) -> None:
        """RestartUnit and wait for its job; then read the unit's state afresh (signals may
        lag the job's end) and publish it with the request's token as done. A failed call is
        not done: the next plan asks again."""
        if await self._guard("restart", self.systemd.restart_unit(name), [name]) is None:
            return
        state = await self._guard("state", self.systemd.unit_state(name), [name])
        if state is not None:
            self._states[name] = state
        self._started.add(name)
        self._restarted[name] = token
        self._mark_publish((name,))

    async def _stop(self, name: str) -> None:
        if await self._guard("stop", self.systemd.stop_unit(name), [name]) is not None:
            self._started.discard(name)
            self._jobs.pop(name, None)
            await self._reset_failed(name)

    async def _reset_failed(self, name: str) -> None:
        """A stopped unit that had failed becomes inactive: its next start is judged afresh."""
        state = self._states.get(name)
        if state is not None and state.active == "failed":
            await self._guard("reset_failed", self.systemd.reset_failed(name), [name])

    async def _unload(self, name: str) -> None:
        await self._reset_failed(name)  # systemd would remember the failure of a unit reloaded
        if not await self._guard("unload", self.systemd.unload(name), [name], done=True):
            return  # still linked here: the next plan unloads it again
        self._hashes.pop(name, None)
        self._jobs.pop(name, None)
        self._started.discard(name)
        self._states.pop(name, None)
        self._restarted.pop(name, None)
        self._health.forget(name)
        if self._view is not None:
            self._view.delete(KeyKind.STATE, (name, self.machine.id))

    async def _guard(self, what: str, coro, units: list[str], *, done=None):  # type: ignore[no-untyped-def]
        """Run one systemd action: its result (`done` if given), or None when it failed. A
        failure is logged and healed by a later plan: at once when the adapter reconnects
        (it re-emits states), else after a delay (see `_retry_if_failed`)."""
        try:
            result = await coro
            return result if done is None else done
        except (FleetdError, OSError) as err:
            self._failed = True
            log.warning(
                "agent.action_failed",
                action=what,
                units=units,
                machine=self.machine.id,
                error=str(err),
            )
            return None

    def _retry_if_failed(self) -> None:
        """After a plan whose systemd actions all worked, the delay starts afresh; after one
        that had a failure, plan again in 1 s, doubling up to a minute while failures go on
        (each is logged) — a retry timer after a failed action, not a poll of state."""
        if not self._failed:
            self._retry = _RETRY_FIRST
            return
        if self._retrying is None:
            delay, self._retry = self._retry, min(self._retry * 2, _RETRY_CAP)
            self._retrying = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retrying = None
        self._dirty.set()

    # ---- publishing states

    def _mark_publish(self, names: Iterable[str] | None = None) -> None:
        """Some units' states (None: any unit's) may need publishing."""
        if names is None:
            self._to_publish = None
        elif self._to_publish is not None:
            self._to_publish.update(names)
        self._publish_dirty.set()

    async def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        last = -_PUBLISH_SPACING
        while True:
            await self._publish_dirty.wait()
            wait = last + _PUBLISH_SPACING - loop.time()
            if wait > 0 and not self._no_starts.is_set():
                # published a moment ago and starts still run: the rest of the burst joins
                # this publish, which goes when the spacing is over or the last start ended
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._no_starts.wait(), wait)
            self._publish_dirty.clear()
            last = loop.time()
            if self.lease is None or not self.registered.is_set() or self._view is None:
                self._to_publish = None
                continue  # (no view yet: the restart tokens done here are not known yet)
            names = self._hashes.keys() if self._to_publish is None else self._to_publish
            self._to_publish = set()
            documents = {name: self._document(name) for name in names if self._publishes(name)}
            changed = states_to_publish(documents, self._published)
            if changed:
                await self._publish_many(changed)

    def _publishes(self, name: str) -> bool:
        """Whether a unit's state is published now: not for a unit on its way out (its
        state goes with it), nor for one still inactive while its start job runs (the
        state after the job says more, one write later)."""
        if name not in self._hashes or name in self._going:
            return False
        state = self._states.get(name)
        return not (name in self._starting and state is not None and state.active == "inactive")

    async def _unpublish(self, names: list[str]) -> None:
        """The published states of units unloaded here go (one txn for all; a destroy may
        have deleted them already)."""
        gone = [name for name in names if self._published.pop(name, None) is not None]
        if gone:
            with contextlib.suppress(EtcdUnavailable):
                await self.registry.remove_states(gone, self.machine.id)

    def _document(self, name: str) -> UnitState | None:
        return state_document(
            self.machine.id,
            name,
            self._hashes[name],
            self._states.get(name),
            self._jobs.get(name, ""),
            self._restarted.get(name, ""),
            self._health.verdicts.get(name),
        )

    async def _publish_many(self, states: list[UnitState]) -> None:
        """Publish the states of a burst together (a few txns, not one put each)."""
        lease = self.lease
        assert lease is not None
        if self._leaving or lease.lost.is_set():
            return  # leaving, or the lease is gone: its states went with it
        try:
            await self.registry.publish_states(states, lease)
        except (EtcdUnavailable, EtcdRequestFailed) as err:
            # unreachable, or refused — the lease revoked under it by leave() or expired: a
            # state is never worth the agent; the next change or registration publishes again
            log.warning(
                "agent.publish_failed",
                units=[s.name for s in states],
                machine=self.machine.id,
                error=str(err),
            )
            return  # the next change or the re-registration publishes them again
        for state in states:
            self._published_one(state)

    def _published_one(self, state: UnitState) -> None:
        name = state.name
        self._published[name] = state
        if self._view is not None:  # the agent follows no state: its own ones, as published
            self._view.put(KeyKind.STATE, (name, state.machine_id), state)
        METRICS.inc("fleetd_agent_states_published_total")
        log.info(
            "agent.state_published",
            unit=name,
            machine=self.machine.id,
            load=state.load,
            active=state.active,
            sub=state.sub,
            result=state.result or None,
            exit=state.exit or None,
            load_error=state.load_error or None,
            job=state.job or None,
            restarted=state.restarted or None,
            gate=state.gate or None,
            health=state.health or None,
            health_reason=state.health_reason or None,
        )
