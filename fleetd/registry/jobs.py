"""The jobs room: submitting, changing and destroying jobs, and collecting unit contents.

A job (`job/<name>`) names a unit content (`unit/<sha1>`) shared by every job with the same
content. Every change here is one txn guarded by what it read (docs/architecture.md,
"Transactions"), and keeps one invariant: every txn that makes a job use a content writes that
content's key again, so a content is deleted only guarded on its key being unchanged since no
other job was seen using it (`_unused_content`) — a new user in between breaks the guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from enum import StrEnum

import structlog

from fleetd.model import Assignment, GlobalJob, Job, JobState, Placement, Rollout, UnitContent
from fleetd.registry.cas import LOST, Lost, until_won
from fleetd.registry.errors import EtcdUnavailable, JobNotFound, RegistryConflict, UnitExists
from fleetd.registry.keys import KeyKind
from fleetd.registry.kv import MAX_NESTED, Cmp, Delete, Get, Guarded, KeyValue, Put, chunked
from fleetd.registry.room import IN_FLIGHT, Room, in_flight
from fleetd.unit import UnitFile, validate_name

__all__ = ["Jobs", "Submitted"]

log = structlog.get_logger(__name__)

_DESTROY_CONCURRENCY = 32  # destroys of one destroy_many in flight at once
_CREATE_CHUNK = 50  # jobs per create_many txn (with their contents: under etcd's 128 ops)
_READS_PER_TXN = 40  # names per txn of set_desired_many's reads (3 each: under 128 ops)


class Submitted(StrEnum):
    """What create_job did."""

    CREATED = "created"
    UNCHANGED = "unchanged"  # the same name with identical content already existed: a no-op


class Jobs(Room):
    """Jobs and their unit contents."""

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
        puts = [Put(job_key, job.encode()), *self._global_copy(job, unit)]

        async def attempt() -> Submitted | Lost:
            res = await self.etcd.txn(
                [Cmp(job_key, "version", "==", 0), Cmp(unit_key, "version", "==", 0)],
                [Put(unit_key, content.encode()), *puts],
                [Get(job_key), Get(unit_key)],
            )
            if not res.succeeded:
                existing_job = res.gets[0]
                if existing_job:
                    return self._resubmitted(name, existing_job[0], content.hash)
                # The content is already stored (another job shares it): add the job, guarded
                # on the content still being there, and write the content again (same bytes)
                # so its mod revision tells a concurrent destroy that it gained a user.
                res = await self.etcd.txn(
                    [Cmp(job_key, "version", "==", 0), Cmp(unit_key, "version", ">", 0)],
                    [Put(unit_key, content.encode()), *puts],
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
        for chunk in chunked(jobs, _CREATE_CHUNK):
            contents = {u.hash: UnitContent(u) for _, u, _ in chunk}
            first = [Put(self.keys.unit(h), c.encode()) for h, c in contents.items()]
            writes = []
            for name, unit, desired in chunk:
                key = self.keys.job(name)
                job = Job(name, unit.hash, desired)
                puts = (Put(key, job.encode()), *self._global_copy(job, unit))
                writes.append(Guarded((Cmp(key, "version", "==", 0),), puts, (Get(key),)))
            try:
                results = await self.etcd.txns(writes, first)
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
        job = self.decode(existing)
        if isinstance(job, Job) and job.unit_hash == unit_hash:
            log.info("registry.job_unchanged", unit=name, hash=unit_hash)
            return Submitted.UNCHANGED
        log.info("registry.job_exists", unit=name, hash=unit_hash)
        raise UnitExists(name)

    async def get_job(self, name: str) -> Job | None:
        return await self.read(self.keys.job(name), Job)

    async def get_unit(self, unit_hash: str) -> UnitContent | None:
        return await self.read(self.keys.unit(unit_hash), UnitContent)

    async def set_desired(self, name: str, state: JobState) -> Job:
        """Change what the user wants of a unit (load/start/stop/unload)."""

        async def attempt() -> Job | Lost:
            kv, job, copies = await self._job_and_copies(name)
            if job.desired == state:
                return job
            new = Job(job.name, job.unit_hash, state)
            write = self._desired_write(kv, copies, new)
            res = await self.etcd.txn(write.compare, write.success)
            if not res.succeeded:
                return LOST
            log.info("registry.job_desired", unit=name, desired=str(state))
            return new

        return await until_won(attempt, f"setting the state of unit {name} kept conflicting")

    async def set_desired_many(
        self, changes: Sequence[tuple[str, JobState]]
    ) -> list[Job | JobNotFound | RegistryConflict | EtcdUnavailable]:
        """`set_desired` of many jobs in few round trips (`fleetctl start` of a thousand
        submitted units): their jobs and copies read in transactions of _READS_PER_TXN names
        (a few in flight), then each change a nested txn guarded as `set_desired`'s — the job
        and its copies unchanged since read — up to MAX_NESTED per round trip. A change that
        lost to another writer meanwhile is done again alone (`set_desired` reads again).
        Returns, in order, each job as it now is, or the error `set_desired` would raise."""
        read = await in_flight([
            functools.partial(self.etcd.txn, [], [g for n, _ in chunk for g in self._job_reads(n)])
            for chunk in chunked(changes, _READS_PER_TXN)
        ])  # fmt: skip
        gets = [kvs for res in read for kvs in res.gets]
        out: list[Job | JobNotFound | RegistryConflict | EtcdUnavailable] = []
        writes: list[Guarded] = []
        written: list[tuple[int, Job]] = []  # (index in `out`, the job written)
        for i, (name, state) in enumerate(changes):
            try:
                kv, job, copies = self._job_read(name, gets[3 * i : 3 * i + 3])
            except JobNotFound as err:
                out.append(err)
                continue
            out.append(job)
            if job.desired != state:
                new = Job(name, job.unit_hash, state)
                writes.append(self._desired_write(kv, copies, new))
                written.append((i, new))
        won_all = await self.nested(writes, "registry.desired")
        for (i, new), won in zip(written, won_all, strict=True):
            if won:
                out[i] = new
                log.info("registry.job_desired", unit=new.name, desired=str(new.desired))
                continue
            try:  # another writer came in between: read and decide again, alone
                out[i] = await self.set_desired(new.name, new.desired)
            except (JobNotFound, RegistryConflict, EtcdUnavailable) as err:
                out[i] = err
        return out

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
            kv, job, copies = await self._job_and_copies(name)
            if job.unit_hash == content.hash:
                return job
            if job.unit_hash != expected_hash:
                raise RegistryConflict(
                    f"unit {name} changed meanwhile (its content is now {job.unit_hash[:7]}, "
                    f"not {expected_hash[:7]}): read it again"
                )
            new = Job(name, content.hash, job.desired)
            writes = [
                Put(new_key, content.encode()),
                Put(job_key, new.encode()),
                *copies.writes(new, unit.requirements(name).is_global),
            ]
            old_deleted = await self._commit_job_change(kv, job.unit_hash, writes, copies.guards)
            if old_deleted is LOST:
                return LOST
            log.info(
                "registry.job_replaced",
                unit=name,
                hash=content.hash,
                previous=job.unit_hash,
                desired=str(job.desired),
            )
            if not old_deleted:
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
            _, mine = await self.etcd.get(job_key)
            if mine is None:
                raise JobNotFound(name)
            job = self.decode(mine)
            unit_hash = job.unit_hash if isinstance(job, Job) else None  # corrupt: none known
            rollout = await self.read(self.keys.rollout(name), Rollout)
            placed = await self._placed(name)
            deleted = await self._commit_job_change(
                mine, unit_hash, self._job_deletes(name, placed.machine), placed.guards
            )
            if deleted is LOST:
                return LOST
            log.info("registry.job_destroyed", unit=name, unit_deleted=deleted)
            if unit_hash is not None and not deleted:
                await self._collect_unit(unit_hash)
            if rollout is not None:  # the versions its rollout kept, gone with it
                for kept in {rollout.from_hash, rollout.to_hash} - {unit_hash}:
                    await self._collect_unit(kept)
            return None

        await until_won(attempt, f"destroying unit {name} kept conflicting with concurrent writers")

    async def destroy_many(self, names: Sequence[str]) -> list[Exception | None]:
        """`destroy` of many jobs, reading the registry once instead of once per job.

        Contents and then jobs are listed (in that order, as `_unused_content` reads them);
        each job goes in a nested txn of its own (up to MAX_NESTED per round trip) guarded on
        its key being unchanged since the listing; a
        content none of the remaining jobs uses goes afterwards, guarded on its own key being
        unchanged since it was read (a job that started using it meanwhile rewrote it). A job
        that changed or appeared since the listing is destroyed alone (`destroy`). Returns, in
        order, None or the error of each (JobNotFound, RegistryConflict, EtcdUnavailable)."""
        if not names:
            return []
        _, contents = await self.etcd.get_prefix(self.keys.of_kind(KeyKind.UNIT))
        _, listed = await self.etcd.get_prefix(self.keys.of_kind(KeyKind.JOB))
        _, schedules = await self.etcd.get_prefix(self.keys.of_kind(KeyKind.SCHEDULE))
        placed = {p.name: kv for kv in schedules if isinstance(p := self.decode(kv), Placement)}
        content_rev = {kv.key: kv.mod_revision for kv in contents}
        jobs: dict[str, tuple[KeyValue, Job]] = {}
        users: dict[str, set[str]] = {}
        for kv in listed:
            job = self.decode(kv)
            if isinstance(job, Job):
                jobs[job.name] = (kv, job)
                users.setdefault(job.unit_hash, set()).add(job.name)

        limit = asyncio.Semaphore(_DESTROY_CONCURRENCY)
        chunks_in_flight = asyncio.Semaphore(IN_FLIGHT)

        async def alone(name: str) -> Exception | None:
            """Destroyed on its own: created or changed since the listing (or not found)."""
            async with limit:
                try:
                    await self.destroy(name)
                except (JobNotFound, RegistryConflict, EtcdUnavailable) as err:
                    return err
                return None

        async def together(chunk: Sequence[str]) -> list[Exception | None]:
            """Jobs listed unchanged, each a nested txn guarded on its key (and placement)
            being as listed: up to MAX_NESTED in one round trip."""
            writes = []
            for name in chunk:
                kv, _ = jobs[name]
                where = _Copies.of(self, name, placed.get(name), None, read_global=False)
                writes.append(Guarded(
                    (Cmp(kv.key, "mod", "==", kv.mod_revision), *where.guards),
                    tuple(self._job_deletes(name, where.machine)),
                ))  # fmt: skip
            try:
                async with chunks_in_flight:
                    results = await self.etcd.txns(writes)
            except EtcdUnavailable as err:
                return [err] * len(chunk)
            out: list[Exception | None] = []
            for name, res in zip(chunk, results, strict=True):
                if not res.succeeded:
                    out.append(await alone(name))  # changed since the listing
                    continue
                users[jobs[name][1].unit_hash].discard(name)
                log.info("registry.job_destroyed", unit=name, unit_deleted=False)
                out.append(None)
            return out

        listed_names = list(dict.fromkeys(n for n in names if n in jobs))
        missing = list(dict.fromkeys(n for n in names if n not in jobs))
        chunks = chunked(listed_names, MAX_NESTED)
        answers = await asyncio.gather(*(together(c) for c in chunks), *(alone(n) for n in missing))
        outcome: dict[str, Exception | None] = {}
        for chunk, answer in zip(chunks, answers, strict=False):
            outcome.update(zip(chunk, answer, strict=True))
        outcome.update(zip(missing, answers[len(chunks) :], strict=True))
        results: list[Exception | None] = []
        done: set[str] = set()
        for name in names:  # a name asked twice is destroyed once: the second is not found
            first = name not in done
            done.add(name)
            results.append(outcome[name] if first or outcome[name] else JobNotFound(name))
        for unit_hash in {jobs[n][1].unit_hash for n in names if n in jobs}:
            key = self.keys.unit(unit_hash)
            if users.get(unit_hash) or key not in content_rev:
                continue
            try:
                res = await self.etcd.txn([Cmp(key, "mod", "==", content_rev[key])], [Delete(key)])
            except EtcdUnavailable as err:  # the jobs are gone; the content stays until reused
                log.warning("registry.unit_not_collected", hash=unit_hash, error=str(err))
                continue
            if res.succeeded:
                log.info("registry.unit_collected", hash=unit_hash)
        return results

    def _job_deletes(self, name: str, machine_id: str | None) -> list[Delete]:
        """What destroying a job deletes besides its content: the job, placement (and the copy
        its machine's agent follows, `machine_id`'s), states, restart requests, its Global
        copy, and its rollout (a Global unit's; a template's stays with it)."""
        deletes = [
            Delete(self.keys.job(name)),
            Delete(self.keys.schedule(name)),
            Delete(self.keys.states_of(name), prefix=True),
            Delete(self.keys.restarts_of(name), prefix=True),
            Delete(self.keys.rollout(name)),  # a Global unit's rollout goes with it
            Delete(self.keys.global_job(name)),
        ]
        if machine_id is not None:
            deletes.append(Delete(self.keys.placed(machine_id, name)))
        return deletes

    def _global_copy(self, job: Job, unit: UnitFile) -> list[Put]:
        """The copy of a new Global unit's job where every agent looks (`global/<name>`)."""
        if not unit.requirements(job.name).is_global:
            return []
        return [Put(self.keys.global_job(job.name), GlobalJob.of(job).encode())]

    async def _placed(self, name: str) -> _Copies:
        """Where the job is placed (the copy its machine's agent follows), to change with it."""
        res = await self.etcd.txn([], [Get(self.keys.schedule(name))])
        return _Copies.of(self, name, _first(res.gets[0]), None, read_global=False)

    async def _job_and_copies(self, name: str) -> tuple[KeyValue, Job, _Copies]:
        """The job (JobNotFound when absent or corrupt) with its copies for the agents, read
        together: a change of the job writes them in the same txn."""
        res = await self.etcd.txn([], self._job_reads(name))
        return self._job_read(name, res.gets)

    def _job_reads(self, name: str) -> list[Get]:
        """What `_job_read` reads: the job, its placement and its Global copy."""
        return [Get(self.keys.job(name)), Get(self.keys.schedule(name)),
                Get(self.keys.global_job(name))]  # fmt: skip

    def _job_read(
        self, name: str, gets: Sequence[tuple[KeyValue, ...]]
    ) -> tuple[KeyValue, Job, _Copies]:
        """The job and its copies from the answers to `_job_reads(name)`; JobNotFound when it
        is absent or corrupt."""
        kv = _first(gets[0])
        job = self.decode(kv) if kv else None
        if kv is None or not isinstance(job, Job):
            raise JobNotFound(name)
        return kv, job, _Copies.of(self, name, _first(gets[1]), _first(gets[2]))

    @staticmethod
    def _desired_write(kv: KeyValue, copies: _Copies, new: Job) -> Guarded:
        """The job read as `kv` replaced by `new` (another desired state), with its copies,
        guarded on both being as read."""
        return Guarded(
            (Cmp(kv.key, "mod", "==", kv.mod_revision), *copies.guards),
            (Put(kv.key, new.encode()), *copies.writes(new)),
        )

    async def _commit_job_change(
        self,
        job: KeyValue,
        unit_hash: str | None,
        ops: Sequence[Put | Delete],
        also: Sequence[Cmp] = (),
    ) -> bool | Lost:
        """Commit `ops`, a change of the job read as `job`, guarded on that job being unchanged
        since (and on `also`); and with them delete the job's content `unit_hash` when no other
        job uses it, guarded on its key being unchanged too (`_unused_content`). LOST when a
        guard failed, else whether the content was deleted (if not, the caller collects it
        afterwards: its other users may be gone by then)."""
        guards = [Cmp(job.key, "mod", "==", job.mod_revision), *also]
        writes: list[Put | Delete | Get] = list(ops)
        unused = None
        if unit_hash is not None:
            unused = await self._unused_content(job.key, unit_hash)
            if unused is not None:
                guards.append(unused)
                writes.append(Delete(self.keys.unit(unit_hash)))
        res = await self.etcd.txn(guards, writes)
        if not res.succeeded:
            return LOST
        return unused is not None

    async def _unused_content(self, job_key: str, unit_hash: str) -> Cmp | None:
        """The guard under which the content `unit_hash` may be deleted along with a change of
        the job at `job_key` (its only user), or None when other jobs use it or it is gone.

        The content key is read before the jobs: a job that starts using the content after
        that read rewrites the content key, which breaks the returned guard.
        """
        unit_key = self.keys.unit(unit_hash)
        _, unit_kv = await self.etcd.get(unit_key)
        if unit_kv is None:
            return None
        _, jobs = await self.etcd.get_prefix(self.keys.of_kind(KeyKind.JOB))
        for kv in jobs:
            if kv.key == job_key:
                continue
            other = self.decode(kv)
            if isinstance(other, Job) and other.unit_hash == unit_hash:
                return None
        # a running rollout keeps both versions: its machines run one or the other
        _, rollouts = await self.etcd.get_prefix(self.keys.of_kind(KeyKind.ROLLOUT))
        for kv in rollouts:
            rollout = self.decode(kv)
            if (
                isinstance(rollout, Rollout)
                and not rollout.state.finished
                and unit_hash in (rollout.from_hash, rollout.to_hash)
            ):
                return None
        return Cmp(unit_key, "mod", "==", unit_kv.mod_revision)

    async def collect_unit(self, unit_hash: str) -> None:
        """Delete the content `unit_hash` if no job (and no running rollout) uses it."""
        await self._collect_unit(unit_hash)

    async def _collect_unit(self, unit_hash: str) -> None:
        """Delete a content no job uses any more (after its last users went concurrently).
        Best effort: losing to a writer that gave it a new user is the right outcome."""
        guard = await self._unused_content("", unit_hash)
        if guard is None:
            return
        res = await self.etcd.txn([guard], [Delete(self.keys.unit(unit_hash))])
        if res.succeeded:
            log.info("registry.unit_collected", hash=unit_hash)


def _first(kvs: Sequence[KeyValue]) -> KeyValue | None:
    return kvs[0] if kvs else None


class _Copies:
    """A job's copies for the agents as read with it (docs/architecture.md, "The agents'
    copies"): the machine it is placed on (its `schedule/` key) and its Global copy, with the
    guards that they are still so; `writes(new)` keeps them in step with a new job."""

    def __init__(self, room: Jobs, name: str, machine: str | None, guards: list[Cmp],
                 global_copy: bool) -> None:  # fmt: skip
        self.room, self.name, self.machine = room, name, machine
        self.guards, self.global_copy = guards, global_copy

    @classmethod
    def of(
        cls,
        room: Jobs,
        name: str,
        schedule: KeyValue | None,
        global_kv: KeyValue | None,
        *,
        read_global: bool = True,
    ) -> _Copies:
        """`read_global`: whether `global_kv` was read (a destroy deletes the Global copy
        whatever it is, and reads only the placement)."""
        keys = room.keys
        placement = room.decode(schedule) if schedule is not None else None
        machine = placement.machine_id if isinstance(placement, Placement) else None
        guards = [
            Cmp(keys.schedule(name), "mod", "==", schedule.mod_revision)
            if schedule is not None
            else Cmp(keys.schedule(name), "version", "==", 0),
        ]
        if read_global:
            guards.append(
                Cmp(keys.global_job(name), "mod", "==", global_kv.mod_revision)
                if global_kv is not None
                else Cmp(keys.global_job(name), "version", "==", 0)
            )
        return cls(room, name, machine, guards, global_kv is not None)

    def writes(self, new: Job, is_global: bool | None = None) -> list[Put | Delete]:
        """The copies of `new`: its machine's, and its Global one (`is_global`: whether its
        content is Global, when it changes; None: as it was)."""
        keys = self.room.keys
        out: list[Put | Delete] = []
        if self.machine is not None:
            out.append(
                Put(keys.placed(self.machine, new.name), Assignment.of(new, self.machine).encode())
            )
        is_global = self.global_copy if is_global is None else is_global
        if is_global:
            out.append(Put(keys.global_job(new.name), GlobalJob.of(new).encode()))
        elif self.global_copy:
            out.append(Delete(keys.global_job(new.name)))
        return out
