"""The placement room: which machine runs each job (`schedule/<name>`), written by the engine.

Each placement change is guarded on the placement the engine planned from (a value, or its
absence) and, to place, on the job still existing: an engine that planned on a stale view, or a
second engine that still thinks it leads, loses the write instead of overwriting. Many changes
go as nested txns (each winning or losing on its own) in few round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from fleetd.model import Placement
from fleetd.registry.kv import MAX_NESTED, Cmp, Delete, Guarded, Put
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

    async def place(self, changes: Sequence[tuple[str, str | None, str | None]]) -> list[bool]:
        """Placement changes `(job, expected machine or None, new machine or None)`, each
        guarded on the placement still being `expected` (and, to place, on the job existing),
        each winning or losing on its own; up to MAX_NESTED of them per round trip (nested
        transactions), the round trips concurrent. Returns whether each won."""
        writes = [self._placement_write(*change) for change in changes]
        if len(writes) == 1:  # a plain transaction: no nesting to build or unpack
            res = await self.etcd.txn(writes[0].compare, writes[0].success)
            log.debug("registry.placed", changes=1, won=int(res.succeeded))
            return [res.succeeded]
        chunks = [writes[i : i + MAX_NESTED] for i in range(0, len(writes), MAX_NESTED)]
        results = await asyncio.gather(*(self.etcd.txns(chunk) for chunk in chunks))
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
