"""The Registry: fleet's cluster state in etcd, as jobs, placements, machines, states, a leader.

Every multi-key change is one etcd transaction guarded by what it read (STYLE.md §6): create a
job, destroy it with its schedule, states and (when unshared) its unit content, move a placement.
Readers call `snapshot()` (everything at one revision) and then `watch(snapshot.revision + 1)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from enum import StrEnum
from types import TracebackType

import structlog

from fleetd.model import (
    DynamicMetadata,
    Job,
    JobState,
    LeaderInfo,
    Machine,
    ModelError,
    Placement,
    RestartRequest,
    UnitContent,
    UnitState,
)
from fleetd.registry.cas import LOST, Lost, until_won
from fleetd.registry.config import EtcdConfig
from fleetd.registry.errors import (
    EtcdUnavailable,
    JobNotFound,
    MachineIdInUse,
    RegistryConflict,
    UnitExists,
    WatchCompacted,
    WatchInterrupted,
)
from fleetd.registry.etcd import MAX_NESTED, Cmp, Delete, EtcdClient, Get, Guarded, KeyValue, Put
from fleetd.registry.fold import ClusterView, Snapshot, decode_value, snapshot_of
from fleetd.registry.follow import Update, follow
from fleetd.registry.keys import KeyKind, KeyLayout
from fleetd.registry.leases import Lease
from fleetd.registry.watch import Backoff, EventStream
from fleetd.unit import UnitFile, validate_name

__all__ = ["Leadership", "Registry", "Submitted"]

log = structlog.get_logger(__name__)

_DESTROY_CONCURRENCY = 32  # destroys of one destroy_many in flight at once
UNITS_SNAPSHOT_MAX = 40  # names per units_snapshot (3 reads each, etcd's 128 ops per txn)
_CREATE_CHUNK = 50  # jobs per create_many txn (with their contents: under etcd's 128 ops)


class Submitted(StrEnum):
    """What create_job did."""

    CREATED = "created"
    UNCHANGED = "unchanged"  # the same name with identical content already existed: a no-op


class Leadership:
    """Proof of having won the engine election: the leader key's create revision."""

    def __init__(self, info: LeaderInfo, lease: Lease, revision: int) -> None:
        self.info = info
        self.lease = lease
        self.revision = revision

    def __repr__(self) -> str:
        return f"Leadership({self.info.machine_id!r}, revision={self.revision})"


class Registry:
    """Async access to the cluster state under one key prefix of one etcd cluster."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.keys = KeyLayout(config.key_prefix)
        self._etcd = EtcdClient(config)
        # the documents of the last snapshot by key, with their mod revision: a key unchanged
        # since is not decoded again (decoding is most of a large snapshot's cost)
        self._decoded: dict[str, tuple[int, object | None]] = {}

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

    # --- decoding --------------------------------------------------------------------------
    def _decode(self, kv: KeyValue) -> object | None:
        """The document at kv, or None (logged) when the stored value is corrupt."""
        try:
            return decode_value(self.keys, kv.key, kv.value)
        except ModelError as err:
            log.warning(
                "registry.corrupt_value", key=kv.key, revision=kv.mod_revision, error=str(err)
            )
            return None

    # --- jobs and units --------------------------------------------------------------------
    async def create_job(
        self, name: str, unit: UnitFile, desired: JobState = JobState.INACTIVE
    ) -> Submitted:
        """Submit a unit: store its content (once per hash) and its job, atomically.

        The same name with identical content again is a no-op (Submitted.UNCHANGED); with
        different content it is refused (UnitExists): fleet never changes a submitted file. A
        name that is no unit name raises UnitNameError (fleet's messages) and stores nothing.
        """
        validate_name(name)  # UnitNameError: never a key (or, on a machine, a path) of it
        content = UnitContent(unit)
        job = Job(name, content.hash, desired)
        job_key, unit_key = self.keys.job(name), self.keys.unit(content.hash)

        async def attempt() -> Submitted | Lost:
            res = await self._etcd.txn(
                [Cmp(job_key, "version", "==", 0), Cmp(unit_key, "version", "==", 0)],
                [Put(unit_key, content.encode()), Put(job_key, job.encode())],
                [Get(job_key), Get(unit_key)],
            )
            if not res.succeeded:
                existing_job = res.gets[0]
                if existing_job:
                    return self._resubmitted(name, existing_job[0], content.hash)
                # The content is already stored (another job shares it): add the job, guarded
                # on the content still being there, and write the content again (same bytes)
                # so its mod revision tells a concurrent destroy that it gained a user.
                res = await self._etcd.txn(
                    [Cmp(job_key, "version", "==", 0), Cmp(unit_key, "version", ">", 0)],
                    [Put(unit_key, content.encode()), Put(job_key, job.encode())],
                    [Get(job_key)],
                )
                if not res.succeeded:
                    if res.gets[0]:
                        return self._resubmitted(name, res.gets[0][0], content.hash)
                    return LOST  # the content was destroyed meanwhile: store it again
            log.info("registry.job_created", unit=name, hash=content.hash, desired=str(desired))
            return Submitted.CREATED

        return await until_won(
            attempt, f"creating unit {name} kept conflicting with concurrent writers"
        )

    async def create_many(
        self, jobs: Sequence[tuple[str, UnitFile, JobState]]
    ) -> list[Submitted | UnitExists | RegistryConflict | EtcdUnavailable]:
        """`create_job` of many jobs in few round trips: per chunk, one txn writes each distinct
        content (again: its mod revision tells a concurrent destroy it has users) and then each
        job as a nested txn guarded on the job being absent; a content none of the chunk's new
        jobs uses is collected again unless older jobs use it. Returns, in order, what
        `create_job` would return or raise for each (the error as a value)."""
        for name, _, _ in jobs:
            validate_name(name)  # UnitNameError before anything is written
        out: list[Submitted | UnitExists | RegistryConflict | EtcdUnavailable] = []
        for start in range(0, len(jobs), _CREATE_CHUNK):
            chunk = jobs[start : start + _CREATE_CHUNK]
            contents = {u.hash: UnitContent(u) for _, u, _ in chunk}
            first = [Put(self.keys.unit(h), c.encode()) for h, c in contents.items()]
            writes = []
            for name, unit, desired in chunk:
                key = self.keys.job(name)
                put = Put(key, Job(name, unit.hash, desired).encode())
                writes.append(Guarded((Cmp(key, "version", "==", 0),), (put,), (Get(key),)))
            try:
                results = await self._etcd.txns(writes, first)
            except EtcdUnavailable as err:
                out += [err] * len(chunk)
                continue
            used = {u.hash for (_, u, _), r in zip(chunk, results, strict=True) if r.succeeded}
            for unit_hash in contents.keys() - used:  # written for jobs that all existed
                with contextlib.suppress(EtcdUnavailable):
                    await self._collect_unit(unit_hash)  # unless older jobs use it
            for (name, unit, desired), res in zip(chunk, results, strict=True):
                if res.succeeded:
                    log.info(
                        "registry.job_created", unit=name, hash=unit.hash, desired=str(desired)
                    )
                    out.append(Submitted.CREATED)
                    continue
                try:
                    existing = res.gets[0][0] if res.gets and res.gets[0] else None
                    if existing is None:  # destroyed between the guard and the read: retry
                        out.append(await self.create_job(name, unit, desired))
                    else:
                        out.append(self._resubmitted(name, existing, unit.hash))
                except (UnitExists, RegistryConflict, EtcdUnavailable) as err:
                    out.append(err)
        return out

    def _resubmitted(self, name: str, existing: KeyValue, unit_hash: str) -> Submitted:
        job = self._decode(existing)
        if isinstance(job, Job) and job.unit_hash == unit_hash:
            log.info("registry.job_unchanged", unit=name, hash=unit_hash)
            return Submitted.UNCHANGED
        log.info("registry.job_exists", unit=name, hash=unit_hash)
        raise UnitExists(name)

    async def get_job(self, name: str) -> Job | None:
        _, kv = await self._etcd.get(self.keys.job(name))
        doc = self._decode(kv) if kv else None
        return doc if isinstance(doc, Job) else None

    async def get_unit(self, unit_hash: str) -> UnitContent | None:
        _, kv = await self._etcd.get(self.keys.unit(unit_hash))
        doc = self._decode(kv) if kv else None
        return doc if isinstance(doc, UnitContent) else None

    async def set_desired(self, name: str, state: JobState) -> Job:
        """Change what the user wants of a unit (load/start/stop/unload)."""
        key = self.keys.job(name)

        async def attempt() -> Job | Lost:
            _, kv = await self._etcd.get(key)
            job = self._decode(kv) if kv else None
            if kv is None or not isinstance(job, Job):
                raise JobNotFound(name)
            if job.desired == state:
                return job
            new = Job(job.name, job.unit_hash, state)
            res = await self._etcd.txn(
                [Cmp(key, "mod", "==", kv.mod_revision)], [Put(key, new.encode())]
            )
            if not res.succeeded:
                return LOST
            log.info("registry.job_desired", unit=name, desired=str(state))
            return new

        return await until_won(attempt, f"setting the state of unit {name} kept conflicting")

    async def replace_job(self, name: str, unit: UnitFile, expected_hash: str) -> Job:
        """Replace a job's content in place (fleet's --replace), keeping its desired state.

        One txn guarded on the job being unchanged since it was read (so still on
        `expected_hash`): writes the new content and the job with the new hash, and deletes the
        old content when no other job uses it. Agents then see the hash change and replace the
        unit file (restarting it only if it was launched). Already on the new content: a no-op.
        Missing job: JobNotFound; on another content than `expected_hash`: RegistryConflict.
        """
        content = UnitContent(unit)
        job_key, new_key = self.keys.job(name), self.keys.unit(content.hash)

        async def attempt() -> Job | Lost:
            _, kv = await self._etcd.get(job_key)
            job = self._decode(kv) if kv else None
            if kv is None or not isinstance(job, Job):
                raise JobNotFound(name)
            if job.unit_hash == content.hash:
                return job
            if job.unit_hash != expected_hash:
                raise RegistryConflict(
                    f"unit {name} changed meanwhile (its content is now {job.unit_hash[:7]}, "
                    f"not {expected_hash[:7]}): read it again"
                )
            new = Job(name, content.hash, job.desired)
            guards = [Cmp(job_key, "mod", "==", kv.mod_revision)]
            ops: list[Put | Delete | Get] = [
                Put(new_key, content.encode()),
                Put(job_key, new.encode()),
            ]
            old_unused = await self._unused_content(job_key, job.unit_hash)
            if old_unused is not None:
                guards.append(old_unused)
                ops.append(Delete(self.keys.unit(job.unit_hash)))
            res = await self._etcd.txn(guards, ops)
            if not res.succeeded:
                return LOST
            log.info(
                "registry.job_replaced",
                unit=name,
                hash=content.hash,
                previous=job.unit_hash,
                desired=str(job.desired),
            )
            if old_unused is None:
                await self._collect_unit(job.unit_hash)
            return new

        return await until_won(
            attempt, f"replacing unit {name} kept conflicting with concurrent writers"
        )

    async def destroy(self, name: str) -> None:
        """Remove a job, its placement, its states, and its content when no other job uses it.

        One txn guarded on the job's own key being unchanged since it was read, so concurrent
        writers of other jobs never make it retry. The content is deleted only guarded on its
        own key being unchanged too: every write that makes a job use a content writes that
        content's key again (create_job, replace_job), so a job that started using it after it
        was found unused fails the guard. When other users were seen, the job goes alone and
        the content is collected afterwards if they are gone by then (two last users destroyed
        at once leave nothing behind). Missing job: JobNotFound.
        """
        job_key = self.keys.job(name)

        async def attempt() -> Lost | None:
            _, mine = await self._etcd.get(job_key)
            if mine is None:
                raise JobNotFound(name)
            job = self._decode(mine)
            guards = [Cmp(job_key, "mod", "==", mine.mod_revision)]
            ops: list[Put | Delete | Get] = self._job_deletes(name)
            unused = None
            if isinstance(job, Job):
                unused = await self._unused_content(job_key, job.unit_hash)
                if unused is not None:
                    guards.append(unused)
                    ops.append(Delete(self.keys.unit(job.unit_hash)))
            res = await self._etcd.txn(guards, ops)
            if not res.succeeded:
                return LOST
            log.info("registry.job_destroyed", unit=name, unit_deleted=unused is not None)
            if isinstance(job, Job) and unused is None:
                await self._collect_unit(job.unit_hash)
            return None

        await until_won(attempt, f"destroying unit {name} kept conflicting with concurrent writers")

    async def destroy_many(self, names: Sequence[str]) -> list[Exception | None]:
        """`destroy` of many jobs, reading the registry once instead of once per job.

        Contents and then jobs are listed (in that order, as `_unused_content` reads them);
        each job goes in its own txn guarded on its key being unchanged since the listing; a
        content none of the remaining jobs uses goes afterwards, guarded on its own key being
        unchanged since it was read (a job that started using it meanwhile rewrote it). A job
        that changed or appeared since the listing is destroyed alone (`destroy`). Returns, in
        order, None or the error of each (JobNotFound, RegistryConflict, EtcdUnavailable)."""
        if not names:
            return []
        _, contents = await self._etcd.get_prefix(self.keys.of_kind(KeyKind.UNIT))
        _, listed = await self._etcd.get_prefix(self.keys.of_kind(KeyKind.JOB))
        content_rev = {kv.key: kv.mod_revision for kv in contents}
        jobs: dict[str, tuple[KeyValue, Job]] = {}
        users: dict[str, set[str]] = {}
        for kv in listed:
            job = self._decode(kv)
            if isinstance(job, Job):
                jobs[job.name] = (kv, job)
                users.setdefault(job.unit_hash, set()).add(job.name)

        limit = asyncio.Semaphore(_DESTROY_CONCURRENCY)

        async def one(name: str) -> Exception | None:
            async with limit:
                return await destroy_one(name)

        async def destroy_one(name: str) -> Exception | None:
            try:
                found = jobs.get(name)
                if found is None:
                    await self.destroy(name)  # created since the listing, or JobNotFound
                    return None
                kv, job = found
                res = await self._etcd.txn(
                    [Cmp(kv.key, "mod", "==", kv.mod_revision)], self._job_deletes(name)
                )
                if not res.succeeded:
                    await self.destroy(name)  # changed since the listing
                    return None
                users[job.unit_hash].discard(name)
                log.info("registry.job_destroyed", unit=name, unit_deleted=False)
            except (JobNotFound, RegistryConflict, EtcdUnavailable) as err:
                return err
            return None

        results = list(await asyncio.gather(*(one(name) for name in names)))
        for unit_hash in {jobs[n][1].unit_hash for n in names if n in jobs}:
            key = self.keys.unit(unit_hash)
            if users.get(unit_hash) or key not in content_rev:
                continue
            try:
                res = await self._etcd.txn([Cmp(key, "mod", "==", content_rev[key])], [Delete(key)])
            except EtcdUnavailable as err:  # the jobs are gone; the content stays until reused
                log.warning("registry.unit_not_collected", hash=unit_hash, error=str(err))
                continue
            if res.succeeded:
                log.info("registry.unit_collected", hash=unit_hash)
        return results

    def _job_deletes(self, name: str) -> list[Put | Delete | Get]:
        """What destroying a job deletes besides its content: the job, placement, states,
        restart requests."""
        return [
            Delete(self.keys.job(name)),
            Delete(self.keys.schedule(name)),
            Delete(self.keys.states_of(name), prefix=True),
            Delete(self.keys.restarts_of(name), prefix=True),
        ]

    async def _unused_content(self, job_key: str, unit_hash: str) -> Cmp | None:
        """The guard under which the content `unit_hash` may be deleted along with a change of
        the job at `job_key` (its only user), or None when other jobs use it or it is gone.

        The content key is read before the jobs: a job that starts using the content after
        that read rewrites the content key, which breaks the returned guard.
        """
        unit_key = self.keys.unit(unit_hash)
        _, unit_kv = await self._etcd.get(unit_key)
        if unit_kv is None:
            return None
        _, jobs = await self._etcd.get_prefix(self.keys.of_kind(KeyKind.JOB))
        for kv in jobs:
            if kv.key == job_key:
                continue
            other = self._decode(kv)
            if isinstance(other, Job) and other.unit_hash == unit_hash:
                return None
        return Cmp(unit_key, "mod", "==", unit_kv.mod_revision)

    async def _collect_unit(self, unit_hash: str) -> None:
        """Delete a content no job uses any more (after its last users went concurrently).
        Best effort: losing to a writer that gave it a new user is the right outcome."""
        guard = await self._unused_content("", unit_hash)
        if guard is None:
            return
        res = await self._etcd.txn([guard], [Delete(self.keys.unit(unit_hash))])
        if res.succeeded:
            log.info("registry.unit_collected", hash=unit_hash)

    # --- one-revision view -----------------------------------------------------------------
    async def snapshot(self, revision: int = 0) -> Snapshot:
        """Jobs, units, placements, states, machines and leader, all at one revision: the
        current one, or `revision` (WatchCompacted when etcd no longer has it)."""

        async def listing() -> tuple[int, list[KeyValue]] | Lost:
            try:
                return await self._etcd.get_prefix(self.keys.prefix, revision)
            except WatchCompacted:
                if revision:
                    raise
                return LOST  # a later page's revision was compacted meanwhile: read again

        revision, kvs = await until_won(
            listing, "listing the registry kept racing etcd compactions"
        )
        before, decoded = self._decoded, {}
        docs = []
        for kv in kvs:
            known = before.get(kv.key)
            if known is not None and known[0] == kv.mod_revision:
                doc = known[1]
            else:
                doc = self._decode(kv)
            decoded[kv.key] = (kv.mod_revision, doc)
            if doc is not None:
                docs.append(doc)
        self._decoded = decoded
        return snapshot_of(revision, docs)

    async def units_snapshot(self, names: Sequence[str]) -> Snapshot:
        """What the API shows of a few units, at one revision, without reading the rest of the
        registry: their jobs, contents, placements and states, and the machines. At most
        UNITS_SNAPSHOT_MAX names (one transaction of reads)."""
        if not 1 <= len(names) <= UNITS_SNAPSHOT_MAX:
            raise ValueError(f"units_snapshot takes 1 to {UNITS_SNAPSHOT_MAX} names")
        reads: list[Put | Delete | Get] = [Get(self.keys.of_kind(KeyKind.MACHINE), prefix=True)]
        for name in names:
            reads += [
                Get(self.keys.job(name)),
                Get(self.keys.schedule(name)),
                Get(self.keys.states_of(name), prefix=True),
            ]
        res = await self._etcd.txn([], reads)
        docs = [d for kvs in res.gets for d in (self._decode(kv) for kv in kvs) if d is not None]
        hashes = {d.unit_hash for d in docs if isinstance(d, Job)}
        contents = await asyncio.gather(
            *(self._etcd.get(self.keys.unit(h), res.revision) for h in sorted(hashes))
        )
        docs += [d for _, kv in contents if kv is not None and (d := self._decode(kv)) is not None]
        return snapshot_of(res.revision, docs)

    async def wait_for(self, predicate: Callable[[Snapshot | ClusterView], bool]) -> Snapshot:
        """The first view of the registry satisfying `predicate`: now, then after each watch
        batch that changed it. No deadline: the caller bounds it."""
        async with aclosing(self.follow()) as updates:
            async for update in updates:
                if predicate(update.view):
                    return update.view.freeze()
        raise RuntimeError("the registry's watch ended")  # pragma: no cover

    async def machines_snapshot(self) -> Snapshot:
        """The machines and their dynamic metadata at one (the current) revision, without the
        rest of the registry: a Snapshot whose jobs, units, placements and states are empty."""

        async def listing() -> tuple[int, list[KeyValue], list[KeyValue]] | Lost:
            try:
                revision, kvs = await self._etcd.get_prefix(self.keys.of_kind(KeyKind.MACHINE))
                _, meta = await self._etcd.get_prefix(
                    self.keys.of_kind(KeyKind.MACHINE_META), revision
                )
            except WatchCompacted:
                return LOST  # compacted between the two reads: read both again
            return revision, kvs, meta

        revision, kvs, meta = await until_won(
            listing, "listing the machines kept racing etcd compactions"
        )
        docs = [d for d in (self._decode(kv) for kv in (*kvs, *meta)) if d is not None]
        return snapshot_of(revision, docs)

    # --- scheduling ------------------------------------------------------------------------
    async def schedule(self, name: str, machine_id: str, expected: str | None = None) -> bool:
        """Place a job on a machine if its placement is still `expected` (None = unscheduled)
        and the job still exists. Returns whether this write won."""
        return (await self.place([(name, expected, machine_id)]))[0]

    async def unschedule(self, name: str, expected_machine: str) -> bool:
        """Remove a placement if it is still on `expected_machine`. Returns whether it won."""
        return (await self.place([(name, expected_machine, None)]))[0]

    async def place(self, changes: Sequence[tuple[str, str | None, str | None]]) -> list[bool]:
        """Placement changes `(job, expected machine or None, new machine or None)`, each
        guarded on the placement still being `expected` (and, to place, on the job existing),
        each winning or losing on its own; up to MAX_NESTED of them per round trip (nested
        transactions), the round trips concurrent. Returns whether each won."""
        writes = [self._placement_write(*change) for change in changes]
        if len(writes) == 1:  # a plain transaction: no nesting to build or unpack
            res = await self._etcd.txn(writes[0].compare, writes[0].success)
            log.debug("registry.placed", changes=1, won=int(res.succeeded))
            return [res.succeeded]
        chunks = [writes[i : i + MAX_NESTED] for i in range(0, len(writes), MAX_NESTED)]
        results = await asyncio.gather(*(self._etcd.txns(chunk) for chunk in chunks))
        won = [r.succeeded for chunk in results for r in chunk]
        log.debug("registry.placed", changes=len(changes), won=sum(won))
        return won

    def _placement_write(self, name: str, expected: str | None, new: str | None) -> Guarded:
        key = self.keys.schedule(name)
        if expected is None:
            guard = Cmp(key, "version", "==", 0)
        else:
            guard = Cmp(key, "value", "==", Placement(name, expected).encode())
        if new is None:
            return Guarded((guard,), (Delete(key),))
        job_exists = Cmp(self.keys.job(name), "version", ">", 0)
        return Guarded((job_exists, guard), (Put(key, Placement(name, new).encode()),))

    # --- machines, states, leases ----------------------------------------------------------
    async def grant_lease(self, ttl: int, lease_id: int | None = None) -> Lease:
        """A kept-alive lease: `lease_id` is re-used when etcd still has it, else a new one."""
        if lease_id:
            left = await self._etcd.time_to_live(lease_id)
            # etcd rounds what is left down to whole seconds (-1: gone): 0 may still be alive,
            # and the re-attached lease is renewed at once (a miss shows as a lost lease).
            if left >= 0:
                log.info("registry.lease_reattached", lease=lease_id, ttl_left=left)
                return Lease(self._etcd, lease_id, ttl, reattached=True).start()
            log.info("registry.lease_expired_before_reattach", lease=lease_id)
        new_id, granted = await self._etcd.grant(ttl)
        log.info("registry.lease_granted", lease=new_id, ttl=granted)
        return Lease(self._etcd, new_id, granted, reattached=False).start()

    async def register_machine(
        self, machine: Machine, ttl: int, lease_id: int | None = None
    ) -> Lease:
        """Publish a machine under a kept-alive lease (re-using `lease_id` if still alive).

        Refused with MachineIdInUse when another lease holds the machine's key.
        """
        lease = await self.grant_lease(ttl, lease_id)
        key = self.keys.machine(machine.id)
        try:
            res = await self._etcd.txn(
                [Cmp(key, "version", "==", 0)], [Put(key, machine.encode(), lease.id)], [Get(key)]
            )
            if not res.succeeded:
                current = res.gets[0][0] if res.gets[0] else None
                if current is not None and current.lease != lease.id:
                    current = await self._take_over_expired(key, current)
                if current is None:  # the holder's lease had expired: register afresh
                    res = await self._etcd.txn(
                        [Cmp(key, "version", "==", 0)], [Put(key, machine.encode(), lease.id)]
                    )
                    if not res.succeeded:
                        raise MachineIdInUse(machine.id)
                    log.info(
                        "registry.machine_registered",
                        machine=machine.id,
                        lease=lease.id,
                        ttl=lease.ttl,
                    )
                    return lease
                if current.lease != lease.id:
                    raise MachineIdInUse(machine.id)
                res = await self._etcd.txn(
                    [Cmp(key, "mod", "==", current.mod_revision)],
                    [Put(key, machine.encode(), lease.id)],
                )
                if not res.succeeded:
                    raise MachineIdInUse(machine.id)
        except BaseException:
            if not lease.reattached:
                await lease.release()
                await self._etcd.revoke(lease.id)
            else:
                await lease.release()
            raise
        log.info("registry.machine_registered", machine=machine.id, lease=lease.id, ttl=lease.ttl)
        return lease

    async def set_machine_metadata(self, changes: Mapping[str, Mapping[str, str]]) -> None:
        """Set dynamic metadata (API PATCH /machines): `{machine_id: {key: value}}`, where
        value "" deletes the key from the machine's effective metadata, configured or not.

        Stored per machine at `machine-meta/<id>`, apart from the machine's registration and
        without a lease: it survives re-registration and overrides the configured metadata
        (fleet kept it under `machines/<id>/metadata/`). A machine not registered (yet) is not
        an error, as in fleet: its metadata applies when it registers. All machines change in
        one txn, guarded on each document being unchanged since it was read.
        """
        keys = {mid: self.keys.machine_meta(mid) for mid in sorted(changes)}

        async def attempt() -> Lost | None:
            res = await self._etcd.txn([], [Get(key) for key in keys.values()])
            guards: list[Cmp] = []
            ops: list[Put | Delete | Get] = []
            for (mid, key), found in zip(keys.items(), res.gets, strict=True):
                current: dict[str, str] = {}
                if found:
                    doc = self._decode(found[0])
                    if isinstance(doc, DynamicMetadata):
                        current = dict(doc.values)
                    guards.append(Cmp(key, "mod", "==", found[0].mod_revision))
                else:
                    guards.append(Cmp(key, "version", "==", 0))
                ops.append(Put(key, DynamicMetadata(mid, {**current, **changes[mid]}).encode()))
            res = await self._etcd.txn(guards, ops)
            if not res.succeeded:
                return LOST
            for mid in keys:
                log.info("registry.machine_metadata_set", machine=mid, changes=changes[mid])
            return None

        await until_won(
            attempt, "setting machine metadata kept conflicting with concurrent writers"
        )

    async def _take_over_expired(self, key: str, current: KeyValue) -> KeyValue | None:
        """A key held by a lease etcd already reports expired (its keys are deleted a moment
        later, on etcd's own expiry sweep): delete it now, guarded on it being unchanged.
        Returns None when it was removed, else the live holder's key."""
        if current.lease and await self._etcd.time_to_live(current.lease) <= 0:
            res = await self._etcd.txn(
                [Cmp(key, "mod", "==", current.mod_revision)], [Delete(key)], [Get(key)]
            )
            if res.succeeded:
                log.info("registry.expired_holder_removed", key=key, lease=current.lease)
                return None
            return res.gets[0][0] if res.gets and res.gets[0] else None
        return current

    async def publish_state(self, state: UnitState, lease: Lease) -> None:
        """Publish what systemd says of a unit on this machine, on the machine's lease."""
        await self._etcd.put(
            self.keys.state(state.name, state.machine_id), state.encode(), lease.id
        )
        log.debug(
            "registry.state_published",
            unit=state.name,
            machine=state.machine_id,
            active=state.active,
            sub=state.sub,
        )

    async def request_restart(self, name: str, machine_id: str, token: str) -> RestartRequest:
        """Ask the agent of `machine_id` to restart `name` once (`restart/<name>/<machine>`,
        no lease), replacing an earlier request there; guarded on the job existing (else
        JobNotFound), so nothing outlives a destroy (which deletes the requests with the job)."""
        request = RestartRequest(name, machine_id, token)
        res = await self._etcd.txn(
            [Cmp(self.keys.job(name), "version", ">", 0)],
            [Put(self.keys.restart(name, machine_id), request.encode())],
        )
        if not res.succeeded:
            raise JobNotFound(name)
        log.info("registry.restart_requested", unit=name, machine=machine_id, token=token)
        return request

    async def remove_state(self, name: str, machine_id: str) -> None:
        await self._etcd.delete(self.keys.state(name, machine_id))
        log.info("registry.state_removed", unit=name, machine=machine_id)

    # --- engine leader election ------------------------------------------------------------
    async def campaign(self, info: LeaderInfo, lease: Lease) -> Leadership:
        """Block until this engine holds `engine/leader` on `lease`.

        Create-if-absent txn; while another holds it, wait (by a watch, not polling) for its key
        to be deleted (resign or lease expiry), then try again.
        """
        key = self.keys.leader
        backoff = Backoff()
        while True:
            try:
                res = await self._etcd.txn(
                    [Cmp(key, "create", "==", 0)], [Put(key, info.encode(), lease.id)], [Get(key)]
                )
                if res.succeeded:
                    log.info("registry.leader_elected", machine=info.machine_id, lease=lease.id)
                    return Leadership(info, lease, res.revision)
                current = res.gets[0][0] if res.gets[0] else None
                if current is not None and current.lease == lease.id:
                    await self._etcd.put(key, info.encode(), lease.id)
                    log.info("registry.leader_resumed", machine=info.machine_id, lease=lease.id)
                    return Leadership(info, lease, current.create_revision)
                log.info("registry.leader_waiting", machine=info.machine_id)
                await self._wait_deleted(key, res.revision + 1)
                backoff.reset()
            except EtcdUnavailable as err:
                log.warning("registry.campaign_retry", error=str(err))
                await backoff.wait()

    async def _wait_deleted(self, key: str, from_revision: int) -> None:
        next_rev = from_revision
        backoff = Backoff()
        while True:
            try:
                async with aclosing(self._etcd.watch(key, next_rev, prefix=False)) as batches:
                    async for batch in batches:
                        backoff.reset()
                        for ch in batch.changes:
                            if ch.type == "delete":
                                return
                            next_rev = ch.revision + 1
            except WatchInterrupted:
                await backoff.wait()
            except WatchCompacted:
                return  # the caller re-checks the key itself

    async def resign(self, leadership: Leadership) -> bool:
        """Give up leadership if still held (guarded on the key's create revision)."""
        key = self.keys.leader
        res = await self._etcd.txn([Cmp(key, "create", "==", leadership.revision)], [Delete(key)])
        log.info("registry.leader_resigned", machine=leadership.info.machine_id, held=res.succeeded)
        return res.succeeded

    async def leader(self) -> LeaderInfo | None:
        _, kv = await self._etcd.get(self.keys.leader)
        doc = self._decode(kv) if kv else None
        return doc if isinstance(doc, LeaderInfo) else None

    async def observe_leader(self) -> AsyncIterator[LeaderInfo | None]:
        """The current leader (or None), then every change of leader."""

        async def leader_only() -> Snapshot:
            revision, kvs = await self._etcd.get_prefix(self.keys.leader)
            return snapshot_of(revision, (d for d in map(self._decode, kvs) if d is not None))

        current: LeaderInfo | bool | None = False  # nothing yielded yet
        updates = follow(leader_only, lambda rev: self.watch(rev, key=self.keys.leader))
        async with aclosing(updates):
            async for update in updates:
                if update.view.leader != current:
                    current = update.view.leader
                    yield current

    # --- watching --------------------------------------------------------------------------
    def watch(self, from_revision: int, *, key: str | None = None) -> EventStream:
        """Typed events from `from_revision` on (use snapshot().revision + 1), resumed across
        disconnects without loss or duplicates; a compaction yields Resync. Pull-based.
        `key`: only that key (and what it prefixes)."""
        return EventStream(self._etcd, self.keys, self.snapshot, from_revision, key=key)

    def follow(
        self, *, start: Snapshot | None = None, view: ClusterView | None = None
    ) -> AsyncIterator[Update]:
        """A snapshot (or `start`), then every watch batch folded into one view: see
        `fleetd.registry.follow`."""
        return follow(self.snapshot, self.watch, start=start, view=view)

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
