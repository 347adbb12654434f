"""The Registry: fleet's cluster state in etcd, as jobs, placements, machines, states, a leader.

Every multi-key change is one etcd transaction guarded by what it read (STYLE.md §6): create a
job, destroy it with its schedule, states and (when unshared) its unit content, move a placement.
Readers call `snapshot()` (everything at one revision) and then `watch(snapshot.revision + 1)`.

This module is the façade callers use; the work is done in rooms, one per role, each a `Room`
(`registry/room.py`: the etcd adapter, the key layout, decoding) and documented there:

- `jobs.py` — submit, replace, destroy jobs and set what is desired of them; unit contents;
- `membership.py` — leases, machines, unit states, dynamic metadata, restart requests;
- `election.py` — the engine leader: campaign, resign, leader, observe_leader;
- `reads.py` — snapshots at one revision, watch, follow, wait_for;
- `local.py` — one machine's part of the registry, as its agent follows it;
- `placement.py` — placing jobs on machines (schedule, unschedule, place) and the copies
  the agents follow (write_index, mark_index);
- `cas.py` — the bounded compare-and-swap retry they share.

The rooms are composed, not mixed in: each is a plain object over the same adapter and layout,
whose dependencies show in its constructor (the election follows the leader through `Reads`)
rather than in a method resolution order, and the Registry's methods below are one line each
saying which room does the work — so a method is found by reading this file, and a room can
be read (and tested) without the others. The rooms never import this module (import-linter).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType

import structlog

from fleetd.model import (
    Assignment,
    Cordon,
    GlobalJob,
    Job,
    JobState,
    LeaderInfo,
    Machine,
    RestartRequest,
    Rollout,
    Target,
    UnitContent,
    UnitState,
)
from fleetd.registry.config import EtcdConfig
from fleetd.registry.election import Election, Leadership
from fleetd.registry.errors import EtcdUnavailable, JobNotFound, RegistryConflict, UnitExists
from fleetd.registry.etcd import EtcdClient
from fleetd.registry.fold import ClusterView, Snapshot
from fleetd.registry.follow import Update
from fleetd.registry.jobs import Jobs, Submitted
from fleetd.registry.keys import KeyLayout
from fleetd.registry.leases import Lease
from fleetd.registry.local import Local
from fleetd.registry.membership import Membership
from fleetd.registry.placement import Placements
from fleetd.registry.reads import Reads
from fleetd.registry.rollouts import Rollouts
from fleetd.registry.watch import EventStream
from fleetd.unit import UnitFile

__all__ = ["Leadership", "Registry", "Submitted"]

log = structlog.get_logger(__name__)


class Registry:
    """Async access to the cluster state under one key prefix of one etcd cluster."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.keys = KeyLayout(config.key_prefix)
        self._etcd = EtcdClient(config)
        self._jobs = Jobs(self._etcd, self.keys)
        self._membership = Membership(self._etcd, self.keys)
        self._reads = Reads(self._etcd, self.keys)
        self._election = Election(self._etcd, self.keys, self._reads)
        self._placements = Placements(self._etcd, self.keys)
        self._rollouts = Rollouts(self._etcd, self.keys, self._jobs.collect_unit)

    @classmethod
    async def open(cls, config: EtcdConfig) -> Registry:
        registry = cls(config)
        await registry.connect()
        return registry

    async def connect(self) -> None:
        await self._etcd.connect()

    async def close(self) -> None:
        await self._etcd.close()

    async def __aenter__(self) -> Registry:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- jobs and unit contents: registry/jobs.py ------------------------------------------
    async def create_job(
        self, name: str, unit: UnitFile, desired: JobState = JobState.INACTIVE
    ) -> Submitted:
        return await self._jobs.create_job(name, unit, desired)

    async def create_many(
        self, jobs: Sequence[tuple[str, UnitFile, JobState]]
    ) -> list[Submitted | UnitExists | RegistryConflict | EtcdUnavailable]:
        return await self._jobs.create_many(jobs)

    async def get_job(self, name: str) -> Job | None:
        return await self._jobs.get_job(name)

    async def get_unit(self, unit_hash: str) -> UnitContent | None:
        return await self._jobs.get_unit(unit_hash)

    async def set_desired(self, name: str, state: JobState) -> Job:
        return await self._jobs.set_desired(name, state)

    async def set_desired_many(
        self, changes: Sequence[tuple[str, JobState]]
    ) -> list[Job | JobNotFound | RegistryConflict | EtcdUnavailable]:
        return await self._jobs.set_desired_many(changes)

    async def replace_job(self, name: str, unit: UnitFile, expected_hash: str) -> Job:
        return await self._jobs.replace_job(name, unit, expected_hash)

    async def destroy(self, name: str) -> None:
        await self._jobs.destroy(name)

    async def destroy_many(self, names: Sequence[str]) -> list[Exception | None]:
        return await self._jobs.destroy_many(names)

    # --- one-revision views, watching and following: registry/reads.py ---------------------
    async def snapshot(self, revision: int = 0) -> Snapshot:
        return await self._reads.snapshot(revision)

    async def units_snapshot(self, names: Sequence[str]) -> Snapshot:
        return await self._reads.units_snapshot(names)

    async def machines_snapshot(self) -> Snapshot:
        return await self._reads.machines_snapshot()

    def watch(
        self,
        from_revision: int,
        *,
        key: str | None = None,
        ranges: Sequence[tuple[str, bool]] = (),
    ) -> EventStream:
        return self._reads.watch(from_revision, key=key, ranges=ranges)

    def follow(
        self,
        *,
        start: Snapshot | None = None,
        view: ClusterView | None = None,
        copies: bool = False,
    ) -> AsyncIterator[Update]:
        return self._reads.follow(start=start, view=view, copies=copies)

    async def wait_for(self, predicate: Callable[[Snapshot | ClusterView], bool]) -> Snapshot:
        return await self._reads.wait_for(predicate)

    def follow_machine(
        self, machine_id: str, *, view: ClusterView | None = None
    ) -> AsyncIterator[Update]:
        """Follow one machine's part of the registry only (its agent's): registry/local.py."""
        return Local(self._etcd, self.keys, machine_id, self._reads.events).follow(view)

    # --- placements: registry/placement.py -------------------------------------------------
    async def schedule(self, name: str, machine_id: str, expected: str | None = None) -> bool:
        return await self._placements.schedule(name, machine_id, expected)

    async def unschedule(self, name: str, expected_machine: str) -> bool:
        return await self._placements.unschedule(name, expected_machine)

    async def place(
        self,
        changes: Sequence[tuple[str, str | None, str | None]],
        jobs: Mapping[str, Job] | None = None,
        revision: int = 0,
    ) -> list[bool]:
        return await self._placements.place(changes, jobs, revision)

    async def write_index(
        self,
        put: Sequence[Assignment] = (),
        drop: Sequence[tuple[str, str]] = (),
        put_global: Sequence[GlobalJob] = (),
        drop_global: Sequence[str] = (),
        *,
        revision: int,
    ) -> int:
        return await self._placements.write_index(
            put, drop, put_global, drop_global, revision=revision
        )

    async def mark_index(self, machine_id: str) -> bool:
        return await self._placements.mark_index(machine_id)

    # --- rollouts and cordons: registry/rollouts.py -----------------------------------------
    async def get_rollout(self, name: str) -> Rollout | None:
        return await self._rollouts.get_rollout(name)

    async def begin_rollout(self, rollout: Rollout, unit: UnitFile | None = None) -> Rollout:
        return await self._rollouts.begin_rollout(rollout, unit)

    async def advance_rollout(
        self,
        old: Rollout,
        new: Rollout,
        *,
        restarts: Sequence[Target] = (),
        revert: bool = False,
    ) -> bool:
        return await self._rollouts.advance_rollout(old, new, restarts=restarts, revert=revert)

    async def get_cordon(self, machine_id: str) -> Cordon | None:
        return await self._rollouts.get_cordon(machine_id)

    async def put_cordon(self, cordon: Cordon, expected: Cordon | None) -> bool:
        return await self._rollouts.put_cordon(cordon, expected)

    async def remove_cordon(self, machine_id: str) -> bool:
        return await self._rollouts.remove_cordon(machine_id)

    # --- machines, states, leases: registry/membership.py ----------------------------------
    async def grant_lease(self, ttl: int, lease_id: int | None = None) -> Lease:
        return await self._membership.grant_lease(ttl, lease_id)

    async def register_machine(
        self, machine: Machine, ttl: int, lease_id: int | None = None
    ) -> Lease:
        return await self._membership.register_machine(machine, ttl, lease_id)

    async def update_machine(self, machine: Machine, lease: Lease) -> bool:
        return await self._membership.update_machine(machine, lease)

    async def set_machine_metadata(self, changes: Mapping[str, Mapping[str, str]]) -> None:
        await self._membership.set_machine_metadata(changes)

    async def publish_state(self, state: UnitState, lease: Lease) -> None:
        await self._membership.publish_state(state, lease)

    async def publish_states(self, states: Sequence[UnitState], lease: Lease) -> None:
        await self._membership.publish_states(states, lease)

    async def request_restart(self, name: str, machine_id: str, token: str) -> RestartRequest:
        return await self._membership.request_restart(name, machine_id, token)

    async def remove_state(self, name: str, machine_id: str) -> None:
        await self._membership.remove_state(name, machine_id)

    async def remove_states(self, names: Sequence[str], machine_id: str) -> None:
        await self._membership.remove_states(names, machine_id)

    # --- engine leader election: registry/election.py --------------------------------------
    async def campaign(self, info: LeaderInfo, lease: Lease) -> Leadership:
        return await self._election.campaign(info, lease)

    async def resign(self, leadership: Leadership) -> bool:
        return await self._election.resign(leadership)

    async def leader(self) -> LeaderInfo | None:
        return await self._election.leader()

    def observe_leader(self) -> AsyncIterator[LeaderInfo | None]:
        return self._election.observe_leader()

    # --- administration (tests, benchmarks, fleetctl debug) --------------------------------
    async def compact(self, revision: int | None = None) -> int:
        """Compact etcd's history up to `revision` (default: now). Returns the revision."""
        if revision is None:
            revision, _ = await self._etcd.get(self.keys.leader)
        await self._etcd.compact(revision)
        log.info("registry.compacted", revision=revision)
        return revision

    @property
    def etcd(self) -> EtcdClient:
        """The adapter, for the watch stream and for benchmarks."""
        return self._etcd
