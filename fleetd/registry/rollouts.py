"""The rollouts room: rollouts (`rollout/<name>`) and cordons (`cordon/<machine-id>`).

A rollout begins in one txn with the change it rolls out: the jobs it covers move to the new
content, the previous content is written again (so a concurrent collection sees it has a user:
see jobs.py) and the rollout document is put, guarded on every job and on the previous rollout
document being what was read. From then on only the engine leader changes the document, each
time as a compare-and-swap on its whole value (`advance_rollout`), with what the step asks done
in the same txn: the restart requests of a health-gated restart, or the jobs set back to the
previous content when the rollout reverts. Cordons are one document per machine, written as a
compare-and-swap too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from fleetd.model import (
    Cordon,
    Job,
    RestartRequest,
    Rollout,
    RolloutAction,
    Target,
    UnitContent,
)
from fleetd.registry.errors import JobNotFound, RegistryConflict, RolloutInProgress
from fleetd.registry.kv import Cmp, Delete, Put
from fleetd.registry.room import Room
from fleetd.unit import UnitFile

__all__ = ["MAX_ROLLOUT_UNITS", "Rollouts"]

log = structlog.get_logger(__name__)

# Jobs one rollout may cover: they change in its first txn, with their guards under etcd's
# default limit of 128 operations per txn.
MAX_ROLLOUT_UNITS = 60


class Rollouts(Room):
    """Rollouts and cordons."""

    def __init__(self, etcd, keys, collect: Callable[[str], Awaitable[None]]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(etcd, keys)
        self._collect = collect  # the jobs room's collection of a content no job uses

    async def get_rollout(self, name: str) -> Rollout | None:
        return await self.read(self.keys.rollout(name), Rollout)

    async def begin_rollout(self, rollout: Rollout, unit: UnitFile | None = None) -> Rollout:
        """Begin `rollout`: for an update, `unit` is the new content (hash `rollout.to_hash`)
        and every job of its targets moves to it in the same txn. RolloutInProgress when
        another rollout of the name runs; RegistryConflict when a job is no longer on
        `rollout.from_hash` (changed meanwhile); JobNotFound when one is gone."""
        names = sorted({t.unit for t in rollout.targets})
        if len(names) > MAX_ROLLOUT_UNITS:
            raise RegistryConflict(
                f"a rollout covers at most {MAX_ROLLOUT_UNITS} units at once; {rollout.name} "
                f"has {len(names)}: roll them out in parts (fleetctl rolling-replace UNIT...)"
            )
        key = self.keys.rollout(rollout.name)
        _, previous_kv = await self.etcd.get(key)
        previous = self.decode(previous_kv) if previous_kv else None
        if isinstance(previous, Rollout) and not previous.state.finished:
            raise RolloutInProgress(rollout.name, previous.progress)
        guards = [
            Cmp(key, "mod", "==", previous_kv.mod_revision)
            if previous_kv
            else Cmp(key, "version", "==", 0)
        ]
        writes: list[Put | Delete] = []
        for name in names:
            _, kv = await self.etcd.get(self.keys.job(name))
            job = self.decode(kv) if kv else None
            if kv is None or not isinstance(job, Job):
                raise JobNotFound(name)
            if job.unit_hash != rollout.from_hash:
                raise RegistryConflict(
                    f"unit {name} changed meanwhile (its content is now {job.unit_hash[:7]}, "
                    f"not {rollout.from_hash[:7]}): read it again"
                )
            guards.append(Cmp(kv.key, "mod", "==", kv.mod_revision))
            if rollout.action is RolloutAction.UPDATE:
                writes.append(Put(kv.key, Job(name, rollout.to_hash, job.desired).encode()))
        if rollout.action is RolloutAction.UPDATE:
            if unit is None or unit.hash != rollout.to_hash:
                raise ValueError("an update rollout needs its new content")
            old = await self.etcd.get(self.keys.unit(rollout.from_hash))
            if old[1] is None:
                raise RegistryConflict(f"the content {rollout.from_hash[:7]} is gone: read again")
            guards.append(Cmp(old[1].key, "mod", "==", old[1].mod_revision))
            writes += [
                Put(self.keys.unit(rollout.to_hash), UnitContent(unit).encode()),
                Put(old[1].key, old[1].value),  # it has a user again: the rollout
            ]
        writes.append(Put(key, rollout.encode()))
        res = await self.etcd.txn(guards, writes)
        if not res.succeeded:
            raise RegistryConflict(f"{rollout.name} changed meanwhile: read it again")
        log.info(
            "registry.rollout_begun",
            unit=rollout.name,
            rollout=rollout.id,
            action=str(rollout.action),
            previous=rollout.from_hash,
            hash=rollout.to_hash,
            targets=len(rollout.targets),
        )
        if isinstance(previous, Rollout):  # what the finished one kept for itself
            for unit_hash in {previous.from_hash, previous.to_hash} - {rollout.from_hash}:
                await self._collect(unit_hash)
        return rollout

    async def advance_rollout(
        self,
        old: Rollout,
        new: Rollout,
        *,
        restarts: Sequence[Target] = (),
        revert: bool = False,
    ) -> bool:
        """Replace `old` by `new` if the stored document is still `old` (False otherwise: it
        changed meanwhile, the caller reads again). In the same txn: a restart request of
        token `new.id` per target of `restarts`, and with `revert` every job of a touched
        target set back to `new.from_hash` (its desired state kept)."""
        key = self.keys.rollout(new.name)
        guards = [Cmp(key, "value", "==", old.encode())]
        writes: list[Put | Delete] = [Put(key, new.encode())]
        for target in restarts:
            job_key = self.keys.job(target.unit)
            guards.append(Cmp(job_key, "version", ">", 0))
            request = RestartRequest(target.unit, target.machine_id, new.id)
            writes.append(Put(self.keys.restart(target.unit, target.machine_id), request.encode()))
        if revert:
            _, content = await self.etcd.get(self.keys.unit(new.from_hash))
            if content is not None:
                guards.append(Cmp(content.key, "mod", "==", content.mod_revision))
                writes.append(Put(content.key, content.value))
            for name in sorted({t.unit for t in new.targets}):
                _, kv = await self.etcd.get(self.keys.job(name))
                job = self.decode(kv) if kv else None
                if kv is None or not isinstance(job, Job) or job.unit_hash != new.to_hash:
                    continue  # gone, or replaced by someone else since: not ours to revert
                guards.append(Cmp(kv.key, "mod", "==", kv.mod_revision))
                writes.append(Put(kv.key, Job(name, new.from_hash, job.desired).encode()))
        res = await self.etcd.txn(guards, writes)
        if not res.succeeded:
            return False
        log.info(
            "registry.rollout_advanced",
            unit=new.name,
            rollout=new.id,
            state=str(new.state),
            progress=new.progress,
            restarts=len(restarts) or None,
            reverted_jobs=revert or None,
        )
        if new.state.finished and not old.state.finished:
            # the version no job runs any more (kept only while the rollout ran)
            for unit_hash in {new.from_hash, new.to_hash}:
                await self._collect(unit_hash)
        return True

    async def put_cordon(self, cordon: Cordon, expected: Cordon | None) -> bool:
        """Write `cordon` if the stored one is still `expected` (None: absent)."""
        key = self.keys.cordon(cordon.machine_id)
        guard = (
            Cmp(key, "version", "==", 0)
            if expected is None
            else Cmp(key, "value", "==", expected.encode())
        )
        res = await self.etcd.txn([guard], [Put(key, cordon.encode())])
        if res.succeeded:
            log.info(
                "registry.cordon_written",
                machine=cordon.machine_id,
                state=str(cordon.state),
                drain=cordon.id or None,
                reason=cordon.reason or None,
            )
        return res.succeeded

    async def remove_cordon(self, machine_id: str) -> bool:
        """Uncordon: False when the machine was not cordoned."""
        key = self.keys.cordon(machine_id)
        res = await self.etcd.txn([Cmp(key, "version", ">", 0)], [Delete(key)])
        if res.succeeded:
            log.info("registry.cordon_removed", machine=machine_id)
        return res.succeeded

    async def get_cordon(self, machine_id: str) -> Cordon | None:
        return await self.read(self.keys.cordon(machine_id), Cordon)
