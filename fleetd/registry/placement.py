"""The placement room: which machine runs each job (`schedule/<name>`), and the copies the
agents follow (`placed/<machine>/<name>`, `global/<name>`, `layout/index`), all written by the
engine leader.

Each placement change is guarded on the placement the engine planned from (a value, or its
absence) and, to place, on the job still existing: an engine that planned on a stale view, or a
second engine that still thinks it leads, loses the write instead of overwriting. With the job
it planned from, a placement writes the machine's copy in the same txn, guarded on the job not
having changed since the view's revision, and deletes the previous machine's copy. Many changes
go as nested txns (each winning or losing on its own) in few round trips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from fleetd.model import Assignment, GlobalJob, IndexMark, Job, Placement
from fleetd.registry.kv import Cmp, Delete, Guarded, Put
from fleetd.registry.room import Room

__all__ = ["Placements"]

log = structlog.get_logger(__name__)

class Placements(Room):
    """Placements of jobs on machines, each a compare-and-swap on what the engine read."""

    async def schedule(self, name: str, machine_id: str, expected: str | None = None) -> bool:
        """Place a job on a machine if its placement is still `expected` (None = unscheduled)
        and the job still exists. Returns whether this write won."""
        return (await self.place([(name, expected, machine_id)]))[0]

    async def unschedule(self, name: str, expected_machine: str) -> bool:
        """Remove a placement if it is still on `expected_machine`. Returns whether it won."""
        return (await self.place([(name, expected_machine, None)]))[0]

    async def place(
        self,
        changes: Sequence[tuple[str, str | None, str | None]],
        jobs: Mapping[str, Job] | None = None,
        revision: int = 0,
    ) -> list[bool]:
        """Placement changes `(job, expected machine or None, new machine or None)`, each
        guarded on the placement still being `expected` (and, to place, on the job existing),
        each winning or losing on its own; up to MAX_NESTED of them per round trip (nested
        transactions), the round trips concurrent. Returns whether each won.

        `jobs`: the jobs the changes were planned from, as of the view at `revision`: a
        placement then writes the machine's copy (`placed/<machine>/<name>`), guarded on the
        job not having changed after `revision`; the previous machine's copy goes with it."""
        jobs = jobs or {}
        writes = [
            self._placement_write(*change, jobs.get(change[0]), revision) for change in changes
        ]
        return await self.nested(writes, "registry.placed")

    def _placement_write(
        self, name: str, expected: str | None, new: str | None, job: Job | None, revision: int
    ) -> Guarded:
        key = self.keys.schedule(name)
        if expected is None:
            guard = Cmp(key, "version", "==", 0)
        else:
            guard = Cmp(key, "value", "==", Placement(name, expected).encode())
        ops: list[Put | Delete] = []
        if expected is not None and expected != new:
            ops.append(Delete(self.keys.placed(expected, name)))
        if new is None:
            return Guarded((guard,), (Delete(key), *ops))
        guards = [Cmp(self.keys.job(name), "version", ">", 0), guard]
        ops.append(Put(key, Placement(name, new).encode()))
        if job is not None and revision:
            guards.append(self._unchanged_since(self.keys.job(name), revision))
            ops.append(Put(self.keys.placed(new, name), Assignment.of(job, new).encode()))
        return Guarded(tuple(guards), tuple(ops))

    @staticmethod
    def _unchanged_since(key: str, revision: int) -> Cmp:
        return Cmp(key, "mod", "<", revision + 1)

    async def write_index(
        self,
        put: Sequence[Assignment] = (),
        drop: Sequence[tuple[str, str]] = (),
        put_global: Sequence[GlobalJob] = (),
        drop_global: Sequence[str] = (),
        *,
        revision: int,
    ) -> int:
        """Write and drop the agents' copies as planned from a view at `revision`
        (`reconcile/index.py`), each guarded on what it copies not having changed since (a
        machine's copy: on the placement still being there and the job unchanged; a drop: on
        the copy unchanged). Returns how many won; one that lost was planned from a view an
        event has moved on since, and is planned again from that event."""
        since = self._unchanged_since
        writes: list[Guarded] = []
        for a in put:
            job_key = self.keys.job(a.name)
            writes.append(Guarded(
                (
                    Cmp(self.keys.schedule(a.name), "value", "==",
                        Placement(a.name, a.machine_id).encode()),
                    Cmp(job_key, "version", ">", 0),
                    since(job_key, revision),
                ),
                (Put(self.keys.placed(a.machine_id, a.name), a.encode()),),
            ))  # fmt: skip
        for machine_id, name in drop:
            key = self.keys.placed(machine_id, name)
            writes.append(Guarded((since(key, revision),), (Delete(key),)))
        for g in put_global:
            job_key = self.keys.job(g.name)
            writes.append(Guarded(
                (Cmp(job_key, "version", ">", 0), since(job_key, revision)),
                (Put(self.keys.global_job(g.name), g.encode()),),
            ))  # fmt: skip
        for name in drop_global:
            key = self.keys.global_job(name)
            writes.append(Guarded(
                (since(key, revision), since(self.keys.job(name), revision)), (Delete(key),)
            ))  # fmt: skip
        won = sum(await self.nested(writes, "registry.index_written"))
        log.info("registry.index_written", changes=len(writes), won=won, revision=revision)
        return won

    async def mark_index(self, machine_id: str) -> bool:
        """Say the agents' copies are complete (`layout/index`, once: create-if-absent)."""
        key = self.keys.index_mark
        res = await self.etcd.txn(
            [Cmp(key, "version", "==", 0)], [Put(key, IndexMark(1, machine_id).encode())]
        )
        if res.succeeded:
            log.info("registry.index_marked", machine=machine_id)
        return res.succeeded
