"""The local room: one machine's part of the registry, followed as the agent of that machine
needs it and nothing more.

An agent reads its own key ranges only (docs/architecture.md, "The agents' copies, and what an
agent reads"): the units placed on its machine (`placed/<machine>/`), the Global units' jobs
(`global/`), the rollouts and the cordons (few: a drain of another machine moves units here,
whose health this agent judges), the restart requests, its machine's registration and dynamic
metadata, and the contents of the units it holds — fetched by hash when a unit names one it
lacks, forgotten when no unit of its names it any more. Nothing about the other machines' units
or states: a cluster of 100,000 units costs an agent what its own units cost. `LocalCopies`
(`copies.py`) turns what it reads into the records' documents, so the agent folds a
`ClusterView` with the one fold and its planner does not know which view it has.

Following is the one follower's way (`follow.py`) over several ranges: list them at one
revision, watch them from the next — one `EventStream` over every range, one etcd watcher each
on one gRPC stream, each resumed from its own last revision across disconnects —, fold each
batch, hand over one `Update` per batch that changed the view. When a range's history was
compacted, the whole part is listed again (`Resync`): the view is replaced, and every range is
watched again from the new listing's revision.

The copies exist once the engine leader says so (`layout/index`, written after its first
complete pass): until then — a registry written by a fleetd that kept no copies, being migrated
— the follower waits, and the agent acts on nothing rather than on an empty range (which would
stop every unit of the machine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog

from fleetd.model import Job, Rollout, UnitContent
from fleetd.registry.copies import LocalCopies
from fleetd.registry.etcd import EtcdClient
from fleetd.registry.fold import (
    Changed,
    ClusterView,
    DecodedEvents,
    Event,
    Resync,
    Snapshot,
    snapshot_of,
)
from fleetd.registry.follow import Update, fold_events
from fleetd.registry.keys import KeyKind, KeyLayout
from fleetd.registry.kv import Get, KeyValue, chunked
from fleetd.registry.room import Room
from fleetd.registry.watch import EventStream, retry_unavailable

__all__ = ["Local"]

log = structlog.get_logger(__name__)

_GETS_PER_TXN = 100  # single-key reads per txn (etcd allows 128 operations)


class Local(Room):
    """One machine's part of the registry: `follow()` it, `snapshot()` it."""

    def __init__(
        self,
        etcd: EtcdClient,
        keys: KeyLayout,
        machine_id: str,
        decoded: DecodedEvents | None = None,
    ) -> None:
        super().__init__(etcd, keys)
        self.machine_id = machine_id
        self.decoded = decoded  # the events the process's other watchers decoded
        self.copies = LocalCopies(machine_id)

    def ranges(self) -> list[tuple[str, bool]]:
        """What this machine's agent watches: (key, whether a prefix)."""
        keys, me = self.keys, self.machine_id
        return [
            (keys.placed_on(me), True),
            (keys.of_kind(KeyKind.GLOBAL), True),
            (keys.of_kind(KeyKind.ROLLOUT), True),
            (keys.of_kind(KeyKind.RESTART), True),
            (keys.of_kind(KeyKind.CORDON), True),  # a drain elsewhere may move units here
            (keys.machine(me), False),
            (keys.machine_meta(me), False),
            (keys.index_mark, False),
        ]

    async def snapshot(self) -> Snapshot:
        """This machine's part at one revision, as the records: its units' jobs, placements
        and contents, the Global jobs, rollouts, its restart requests, registration, metadata,
        cordon, and the states it published of the units it holds."""
        revision = 0  # the first read's; the others are read at it (etcd answers with its own)
        documents: list[Any] = []
        for key, prefix in self.ranges():
            if prefix:
                at, kvs = await self.etcd.get_prefix(key, revision)
            else:
                at, kv = await self.etcd.get(key, revision)
                kvs = [kv] if kv is not None else []
            revision = revision or at
            documents += [d for kv in kvs if (d := self.decode(kv)) is not None]
        # (a relist runs when the follower asks the stream for its next batch, whose Resync
        # the view folds next: the copies and the view move on together)
        records = self.copies.reset(documents)
        names = sorted(self.copies.names)
        records += await self._reads([self.keys.state(n, self.machine_id) for n in names])
        needed = {d.unit_hash for d in records if isinstance(d, Job)}
        needed |= {h for d in records if isinstance(d, Rollout) for h in (d.from_hash, d.to_hash)}
        records += await self._reads([self.keys.unit(h) for h in sorted(needed)])
        return snapshot_of(revision, records)

    async def follow(self, view: ClusterView | None = None) -> AsyncIterator[Update]:
        """Wait for the copies to exist, then follow this machine's part (see above)."""
        await self._index_ready()
        start = await retry_unavailable(self.snapshot, "registry.snapshot_retry")
        if view is None:
            view = ClusterView(start)
        else:
            view.reset(start)
        log.info(
            "registry.following_machine",
            machine=self.machine_id,
            revision=start.revision,
            units=len(view.jobs),
        )
        yield Update(view, (), everything=True)
        stream = EventStream(
            self.etcd, self.keys, self.snapshot, start.revision + 1, ranges=self.ranges(),
            decoded=self.decoded,
        )  # fmt: skip
        async with stream:
            async for batch in stream.batches():
                update = await self._fold(view, batch)
                if update is not None:
                    yield update

    async def _fold(self, view: ClusterView, batch: list[Event]) -> Update | None:
        """Fold one watch batch. The contents its units name are fetched first, and only then
        is anything folded: the agent may plan whenever this awaits, and must never see a
        unit whose content it lacks (it would take it for one no longer placed here)."""
        events: list[Event] = []
        for raw in batch:
            if isinstance(raw, Resync):  # in the records' terms already (`snapshot()`)
                events = [raw]  # it replaces everything before it
            else:
                events += self.copies.translate(raw)
        if not any(isinstance(e, Resync) for e in events):
            events = await self._contents(view, events) + events
        update = fold_events(view, events)
        self._forget_contents(view)
        return update

    async def _contents(self, view: ClusterView, events: list[Event]) -> list[Event]:
        """The contents `events` and the view name (a job's, a rollout's versions) that the
        view lacks, read as events to fold first. Contents are immutable: read at any
        revision; one not there yet is asked again with the next batch."""
        needed = {job.unit_hash for job in view.jobs.values()}  # (one read before may have
        for rollout in view.rollouts.values():  # come too early: a rollout before its content)
            needed |= {rollout.from_hash, rollout.to_hash}
        for event in events:
            if isinstance(event, Changed) and event.kind is KeyKind.JOB:
                needed.add(event.doc.unit_hash)
            elif isinstance(event, Changed) and event.kind is KeyKind.ROLLOUT:
                needed |= {event.doc.from_hash, event.doc.to_hash}
        missing = sorted(needed - view.units.keys())
        if not missing:
            return []
        docs = await self._reads([self.keys.unit(h) for h in missing])
        revision = events[0].revision if events else view.revision
        return [
            Changed(revision, KeyKind.UNIT, d.hash, d) for d in docs if isinstance(d, UnitContent)
        ]

    @staticmethod
    def _forget_contents(view: ClusterView) -> None:
        """Contents no unit (nor rollout) of the view names any more are dropped."""
        needed = {job.unit_hash for job in view.jobs.values()}
        for rollout in view.rollouts.values():
            needed |= {rollout.from_hash, rollout.to_hash}
        for unit_hash in [h for h in view.units if h not in needed]:
            view.delete(KeyKind.UNIT, unit_hash)

    async def _reads(self, keys: Sequence[str]) -> list[Any]:
        """The documents at `keys` (absent and corrupt ones left out), 100 per txn."""
        out: list[Any] = []
        for chunk in chunked(keys, _GETS_PER_TXN):
            res = await self.etcd.txn([], [Get(k) for k in chunk])
            out += [d for kvs in res.gets for kv in kvs if (d := self.decode(kv)) is not None]
        return out

    async def _index_ready(self) -> None:
        """Return once the engine leader has said the copies are complete (`layout/index`)."""
        key = self.keys.index_mark

        async def read() -> tuple[int, KeyValue | None]:
            return await self.etcd.get(key)

        waited = False
        while True:
            revision, kv = await retry_unavailable(read, "registry.snapshot_retry")
            if kv is not None:
                if waited:
                    log.info("registry.index_ready", machine=self.machine_id)
                return
            if not waited:
                log.info("registry.waiting_for_index", machine=self.machine_id)
                waited = True

            async def relist() -> Snapshot:
                return Snapshot((await read())[0])

            async with EventStream(
                self.etcd, self.keys, relist, revision + 1, key=key, prefix=False
            ) as stream:
                await anext(stream)  # written (or relisted): read it again
