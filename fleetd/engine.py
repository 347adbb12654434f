"""The engine shell: win the leadership, keep a view of the cluster from watches, apply plans.

Every change (a job submitted or changed, a machine up or down, a placement written) reaches the
leader as a watch event; a burst of events is coalesced into one plan of the whole view
(level-based, STYLE.md §4). Plans are applied as compare-and-swap transactions on what was read,
so two engines that briefly both believe they lead can never place a job twice. The leader steps
down the moment its lease is lost or the leader key names someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from pathlib import Path

import structlog

from fleetd.leasefile import LeaseFile
from fleetd.metrics import METRICS
from fleetd.model import Cordon, DrainState, Job, LeaderInfo, Rollout
from fleetd.reconcile.capacity import MachineUse, cluster_use, overcommit_changes, placed_after
from fleetd.reconcile.drain import drains_due, plan_drain
from fleetd.reconcile.engine import (
    Action,
    EnginePlan,
    Step,
    plan_for,
    record_won,
    steps,
)
from fleetd.reconcile.index import plan_index
from fleetd.reconcile.relevance import deposed, replans
from fleetd.reconcile.rollout import next_due, plan_rollout, steps_due
from fleetd.reconcile.scheduler import JobSpec, Strategy
from fleetd.registry import (
    ClusterView,
    EtcdUnavailable,
    KeyKind,
    Leadership,
    Lease,
    Registry,
    Resync,
    Snapshot,
)
from fleetd.registry.watch import Backoff, retry_unavailable

__all__ = ["Engine"]

log = structlog.get_logger(__name__)


class Engine:
    """Campaigns for leadership forever; while leader, keeps the placements right."""

    def __init__(
        self,
        registry: Registry,
        machine_id: str,
        *,
        version: str = "",
        lease_ttl: int = 10,
        lease_file: Path | None = None,
        strategy: Strategy = Strategy.LEASTLOADED,
        on_leadership: Callable[[bool], None] | None = None,
    ) -> None:
        self.registry = registry
        self.strategy = strategy  # how machines that fit a unit with reservations are ranked
        self.info = LeaderInfo(machine_id, version)
        self.lease_ttl = lease_ttl
        # Where the leader's lease ID is kept: a fleetd restarted within the TTL re-attaches to
        # it and resumes the leadership at once instead of waiting for its own old lease to end.
        self.lease_file = LeaseFile(lease_file)
        self.is_leader = asyncio.Event()
        # told True when this engine starts leading, False when it stops (the daemon's STATUS=)
        self.on_leadership = on_leadership
        self.plans = 0  # plans computed while leader (tests and metrics)
        self.unplaced: Mapping[str, str] = {}  # why each waiting job has no machine
        self.held: Mapping[str, str] = {}  # why each unit a drain released has no other machine
        # machines whose units reserve more than they offer, by ID (logged when that changes)
        self.overcommitted: dict[str, MachineUse] = {}
        self._planned = asyncio.Condition()  # notified after each plan is applied
        self._pending_since: dict[str, float] = {}  # job → when the leader saw it need a machine
        self._specs: dict[str, tuple[Job, JobSpec]] = {}  # the planner thread's (job_specs)

    async def run(self) -> None:
        """Lead whenever elected, until cancelled."""
        while True:
            lease = await retry_unavailable(
                lambda: self.registry.grant_lease(self.lease_ttl, self.lease_file.load()),
                "engine.lease_unavailable",
                backoff=Backoff(first=0.1, cap=self.lease_ttl / 2),
                machine=self.info.machine_id,
            )
            self.lease_file.save(lease.id)
            try:
                leadership = await self.registry.campaign(self.info, lease)
                await self._lead(leadership, lease)
            except EtcdUnavailable as err:
                log.warning("engine.etcd_unavailable", machine=self.info.machine_id, error=str(err))
            finally:
                self._leading(False)
                await _shield(lease.release())

    async def wait_planned(self, predicate: Callable[[Engine], bool]) -> None:
        """Wait until, after some plan was applied, `predicate(self)` holds."""
        async with self._planned:
            await self._planned.wait_for(lambda: predicate(self))

    async def resign(self) -> None:
        """Give up leadership now (graceful shutdown), so another engine takes over at once."""
        leadership = getattr(self, "_leadership", None)
        if leadership is not None:
            with contextlib.suppress(EtcdUnavailable):
                await self.registry.resign(leadership)

    def _leading(self, leading: bool) -> None:
        if leading == self.is_leader.is_set():
            return
        if leading:
            self.is_leader.set()
        else:
            self.is_leader.clear()
        if self.on_leadership is not None:
            self.on_leadership(leading)

    async def _lead(self, leadership: Leadership, lease: Lease) -> None:
        self._leadership = leadership
        self.overcommitted = {}  # this term's log tells of every over-committed machine once
        self._leading(True)
        log.info("engine.leading", machine=self.info.machine_id, lease=lease.id)
        view, dirty, stepped_down = ClusterView(), asyncio.Event(), asyncio.Event()
        rolling = asyncio.Event()
        watchers = {
            "watch": asyncio.create_task(self._follow(view, dirty, stepped_down, rolling)),
            "planner": asyncio.create_task(self._act(view, dirty, rolling)),
            "rollouts": asyncio.create_task(self._roll(view, rolling, dirty)),
            "lease lost": asyncio.create_task(lease.lost.wait()),
            "another engine leads": asyncio.create_task(stepped_down.wait()),
        }
        try:
            done, _ = await asyncio.wait(watchers.values(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._leadership = None
            for task in watchers.values():
                task.cancel()
            await asyncio.gather(*watchers.values(), return_exceptions=True)
        for why, task in watchers.items():
            if task not in done:
                continue
            error = None if task.cancelled() else task.exception()
            if isinstance(error, EtcdUnavailable):
                raise error
            if error is not None:  # a bug: log it loudly, step down, campaign again
                log.error(
                    "engine.crashed",
                    machine=self.info.machine_id,
                    part=why,
                    exc_info=(type(error), error, error.__traceback__),
                )
            log.warning("engine.stepping_down", machine=self.info.machine_id, reason=why)

    async def _follow(
        self,
        view: ClusterView,
        dirty: asyncio.Event,
        stepped_down: asyncio.Event,
        rolling: asyncio.Event,
    ) -> None:
        """Fold the registry into the view; wake the planner when what changed can move jobs,
        and the rollouts' stepper when it can move a rollout on."""
        async with aclosing(self.registry.follow(view=view, copies=True)) as updates:
            async for update in updates:
                if any(isinstance(e, Resync) for e in update.events):
                    self._specs = {}  # a new one: the planner thread may be using the old
                if deposed(view, update.events, self.info.machine_id):
                    stepped_down.set()
                    return
                if replans(update.events):
                    dirty.set()
                if steps_due(view, update.events) or drains_due(view, update.events):
                    rolling.set()

    async def _roll(self, view: ClusterView, rolling: asyncio.Event, dirty: asyncio.Event) -> None:
        """Move every running rollout on (`plan_rollout`) and every drain (`plan_drain`), one
        compare-and-swap of its document each; a write lost to a newer document is planned
        again from it. Besides watch events, a deadline timer wakes it when a rollout's
        instance is overdue a verdict (`next_due`)."""
        timer: asyncio.TimerHandle | None = None
        try:
            while True:
                await rolling.wait()
                rolling.clear()
                for cordon in [c for c in view.cordons.values() if c.state is DrainState.DRAINING]:
                    if await self._drain(view, cordon):
                        dirty.set()  # it released a unit: the planner moves it
                for rollout in [r for r in view.rollouts.values() if not r.state.finished]:
                    await self._step_rollout(view, rollout)
                if timer is not None:
                    timer.cancel()
                due = [d for r in view.rollouts.values() if (d := next_due(r)) is not None]
                if due:  # a deadline timer, not a poll: it fires once, when the first is due
                    delay = max(0.0, min(due) - time.time()) + 0.1
                    timer = asyncio.get_running_loop().call_later(delay, rolling.set)
        finally:
            if timer is not None:
                timer.cancel()

    async def _step_rollout(self, view: ClusterView, rollout: Rollout) -> None:
        """One step of a rollout: the next document, written as a compare-and-swap with what
        it asks (restart requests, the jobs' revert)."""
        step = plan_rollout(rollout, view, time.time())
        if not step.changed:
            return
        new = step.rollout
        won = await self.registry.advance_rollout(
            rollout, new, restarts=step.restarts, revert=step.revert
        )
        METRICS.inc("fleetd_engine_rollout_steps_total", outcome="won" if won else "lost")
        if not won:
            return  # its newer document is on its way: planned again from it
        if view.rollouts.get(new.name) == rollout and not step.revert:
            # recorded before its watch event comes (not with a revert: the jobs it changed
            # come with that event, and a plan must not see one without them)
            view.put(KeyKind.ROLLOUT, new.name, new)
        for change in step.changes:
            log.info(
                "engine.rollout_step",
                unit=new.name,
                rollout=new.id,
                change=change,
                state=str(new.state),
                progress=new.progress,
            )
        if new.state.finished:
            METRICS.inc("fleetd_rollouts_finished_total", state=str(new.state))

    async def _drain(self, view: ClusterView, cordon: Cordon) -> bool:
        """One step of a drain: the next document, written as a compare-and-swap; whether it
        released a unit (recorded in the view here, so its watch event will not come back)."""
        waiting = {**self.unplaced, **self.held}
        step = plan_drain(cordon, view, time.time(), waiting)
        if not step.changed:
            return False
        new = step.cordon
        won = await self.registry.put_cordon(new, cordon)
        METRICS.inc("fleetd_engine_drain_steps_total", outcome="won" if won else "lost")
        if not won:
            return False  # its newer document is on its way: planned again from it
        if view.cordons.get(new.machine_id) == cordon:
            view.put(KeyKind.CORDON, new.machine_id, new)
        for unit, change in step.changes:
            log.info(
                "engine.drain_step",
                unit=unit or None,
                machine=new.machine_id,
                drain=new.id,
                change=change,
                state=str(new.state),
            )
        return bool(step.released)

    async def _act(self, view: ClusterView, dirty: asyncio.Event, rolling: asyncio.Event) -> None:
        """Plan the whole view whenever it changed, and apply the plan (a drain waiting for a
        machine is told when why it waits changes)."""
        while True:
            await dirty.wait()
            dirty.clear()
            # Planned in a thread on a copy, while the follower goes on applying events: a
            # burst of events costs one plan per plan's duration, not one per watch batch.
            snapshot = view.freeze()
            plan = await asyncio.to_thread(plan_for, snapshot, self._specs, self.strategy)
            self.plans += 1
            METRICS.inc("fleetd_engine_plans_total")
            self._note_pending(view, plan)
            if plan.held != self.held or plan.unplaced != self.unplaced:
                rolling.set()  # a drain may wait on one of them: its reason changes
            self.held = plan.held
            self._report_unplaced(plan.unplaced)
            moves: list[tuple[str, str | None]] = []
            if plan.tasks:
                writes = steps(plan)
                won = await self._apply(writes, snapshot)
                for step, ok in zip(writes, won, strict=True):
                    if ok:
                        record_won(view, step, snapshot.jobs.get(step.job))
                        moves.append((step.job, step.new))
            await self._copy_for_agents(view)
            await self._report_overcommitted(snapshot, moves)
            async with self._planned:
                self._planned.notify_all()

    def _note_pending(self, view: ClusterView, plan: EnginePlan) -> None:
        """Remember when each job first needed a machine (for the placement latency)."""
        now = time.monotonic()
        for task in plan.tasks:
            if task.action is Action.SCHEDULE:
                self._pending_since.setdefault(task.job, now)
        for name in plan.unplaced:
            self._pending_since.setdefault(name, now)
        for name in [n for n in self._pending_since if n not in view.jobs]:
            del self._pending_since[name]

    def _report_unplaced(self, unplaced: Mapping[str, str]) -> None:
        for name, why in unplaced.items():
            if self.unplaced.get(name) != why:
                log.info("engine.unit_unplaced", unit=name, reason=why)
        self.unplaced = unplaced

    async def _report_overcommitted(
        self, snapshot: Snapshot, moves: list[tuple[str, str | None]]
    ) -> None:
        """Log each machine once when its units come to reserve more than it offers, and once
        when they no longer do (`reconcile/capacity.py`), as placed once the plan's won writes
        are done."""
        placements = placed_after(snapshot.placements, moves) if moves else None
        use = await asyncio.to_thread(cluster_use, snapshot, self._specs, placements=placements)
        self.overcommitted, changes = overcommit_changes(self.overcommitted, use)
        for change in changes:
            u = change.use
            numbers = {
                "machine": u.machine,
                "memory_reserved": u.memory.reserved,
                "memory_capacity": u.memory.capacity,
                "cpus_reserved": u.cpus.reserved,
                "cpus_capacity": u.cpus.capacity,
                "overcommit_allowed": u.overcommit,
            }
            if change.overcommitted:
                log.warning("engine.machine_overcommitted", **numbers)
            else:
                reason = "machine left" if change.gone else "reserved within capacity"
                log.info("engine.machine_overcommit_ended", reason=reason, **numbers)

    async def _copy_for_agents(self, view: ClusterView) -> None:
        """Keep the agents' copies (`placed/`, `global/`) in step with the records: write what
        `plan_index` finds missing, stale or left over (all of them once, on a registry a
        fleetd without copies wrote: the migration), then, once they are complete, say so
        (`layout/index`): agents act on their own key ranges only from then on."""
        snapshot = view.freeze()
        index = await asyncio.to_thread(plan_index, snapshot, self._specs)
        complete = not index
        if index:
            won = await self.registry.write_index(
                index.put, index.drop, index.put_global, index.drop_global,
                revision=snapshot.revision,
            )  # fmt: skip
            complete = won == len(index)
            log.info(
                "engine.index_copied",
                machine=self.info.machine_id,
                placed=len(index.put),
                dropped=len(index.drop),
                globals=len(index.put_global),
                globals_dropped=len(index.drop_global),
                won=won,
            )
        if complete and not view.marks:
            await self.registry.mark_index(self.info.machine_id)

    async def _apply(self, writes: list[Step], snapshot: Snapshot) -> list[bool]:
        """The plan's guarded writes — place, move (compare-and-swap old → new) or unplace a
        job — many per etcd round trip, each winning or losing on its own; a placement copies
        the job it was planned from to the machine's agent (`placed/`)."""
        won = await self.registry.place(
            [(step.job, step.old, step.new) for step in writes], snapshot.jobs, snapshot.revision
        )
        now = time.monotonic()
        for step, ok in zip(writes, won, strict=True):
            action = step.action.value
            METRICS.inc(
                "fleetd_engine_writes_total", action=action, outcome="won" if ok else "lost"
            )
            seen = self._pending_since.pop(step.job, None)
            if ok and step.new is not None and seen is not None:
                METRICS.observe("fleetd_placement_latency_seconds", now - seen)
            log.info(
                f"engine.{action}" if ok else f"engine.{action}_lost",
                unit=step.job,
                machine=step.new or step.old,
                previous=step.old if step.new else None,
                reason=step.reason,
            )
        return won


async def _shield(coro) -> None:  # type: ignore[no-untyped-def]
    """Finish a clean-up step even when the surrounding task is being cancelled. A cancellation
    that arrives during the step still ends the task once the step is done: swallowed, it left
    `run()` campaigning again after stepping down, and a shutdown awaiting the cancelled engine
    (right after `resign()` made it step down) waited forever."""
    step = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(step)
    except asyncio.CancelledError:
        with contextlib.suppress(EtcdUnavailable, asyncio.CancelledError):
            await step
        raise
    except EtcdUnavailable:
        pass
