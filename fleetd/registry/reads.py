"""The reads room: the registry at one revision, and following it from there.

`snapshot()` lists the whole prefix at one revision; `units_snapshot` and `machines_snapshot`
read a few units or the machines alone, for the API. Long readers then `watch` from the
snapshot's revision + 1 (an `EventStream`, which relists through `snapshot` after a
compaction) or, most of them, `follow` (`fleetd.registry.follow`: snapshot, watch and fold into
one view, written once). Decoding is most of a large snapshot's cost, so the documents of the
last snapshot are kept by key and mod revision: a key unchanged since is not decoded again.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

from fleetd.model import Job
from fleetd.registry.cas import LOST, Lost, until_won
from fleetd.registry.errors import WatchCompacted
from fleetd.registry.etcd import EtcdClient
from fleetd.registry.fold import ClusterView, DecodedEvents, Snapshot, snapshot_of
from fleetd.registry.follow import Update, follow
from fleetd.registry.keys import COPIES, KeyKind, KeyLayout
from fleetd.registry.kv import Get, KeyValue, chunked
from fleetd.registry.room import Room, in_flight
from fleetd.registry.watch import EventStream

__all__ = ["Reads"]

UNITS_PER_READ = 40  # names per transaction of units_snapshot (3 reads each; etcd: 128 ops)
CONTENTS_PER_READ = 120  # contents per transaction of units_snapshot


class Reads(Room):
    """Snapshots of the registry, and watching or following it from one."""

    def __init__(self, etcd: EtcdClient, keys: KeyLayout) -> None:
        super().__init__(etcd, keys)
        # the last snapshot's documents by key, with their mod revision (see above)
        self._decoded: dict[str, tuple[int, object | None]] = {}
        # the events every watcher of this registry decoded: each change is decoded once
        self.events = DecodedEvents()

    async def snapshot(self, revision: int = 0) -> Snapshot:
        """Jobs, units, placements, states, machines and leader, all at one revision: the
        current one, or `revision` (WatchCompacted when etcd no longer has it)."""

        async def listing() -> tuple[int, list[KeyValue]] | Lost:
            try:
                return await self.etcd.get_prefix(self.keys.prefix, revision)
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
                doc = self.decode(kv)
            decoded[kv.key] = (kv.mod_revision, doc)
            if doc is not None:
                docs.append(doc)
        self._decoded = decoded
        return snapshot_of(revision, docs)

    async def units_snapshot(self, names: Sequence[str]) -> Snapshot:
        """What the API shows of some units, at one revision, without reading the rest of the
        registry: their jobs, contents, placements and states, and the machines. A transaction
        of reads per UNITS_PER_READ names (the first at the current revision, the others as at
        its revision, a few in flight), then one per CONTENTS_PER_READ contents: a bulk
        command's thousand units cost what they are, not what the cluster holds."""
        if not names:
            raise ValueError("units_snapshot takes at least one name")

        async def attempt() -> Snapshot | Lost:
            try:
                return await self._units_at(names)
            except WatchCompacted:
                return LOST  # compacted between two of its reads: read them all again

        return await until_won(attempt, "reading units kept racing etcd compactions")

    async def _units_at(self, names: Sequence[str]) -> Snapshot:
        chunks = chunked(names, UNITS_PER_READ)
        machines = Get(self.keys.of_kind(KeyKind.MACHINE), prefix=True)
        first = await self.etcd.txn([], [machines, *self._unit_reads(chunks[0], 0)])
        revision = first.revision
        rest = await in_flight([
            functools.partial(self.etcd.txn, [], self._unit_reads(chunk, revision))
            for chunk in chunks[1:]
        ])  # fmt: skip
        kvs = [kv for res in (first, *rest) for reads in res.gets for kv in reads]
        docs = [d for d in map(self.decode, kvs) if d is not None]
        hashes = sorted({d.unit_hash for d in docs if isinstance(d, Job)})
        found = await in_flight([
            functools.partial(
                self.etcd.txn, [], [Get(self.keys.unit(h), revision=revision) for h in chunk]
            )
            for chunk in chunked(hashes, CONTENTS_PER_READ)
        ])  # fmt: skip
        docs += [d for res in found for reads in res.gets for kv in reads if (d := self.decode(kv))]
        return snapshot_of(revision, docs)

    def _unit_reads(self, names: Sequence[str], revision: int) -> list[Get]:
        return [
            read
            for name in names
            for read in (
                Get(self.keys.job(name), revision=revision),
                Get(self.keys.schedule(name), revision=revision),
                Get(self.keys.states_of(name), prefix=True, revision=revision),
            )
        ]

    async def machines_snapshot(self) -> Snapshot:
        """The machines and their dynamic metadata at one (the current) revision, without the
        rest of the registry: a Snapshot whose jobs, units, placements and states are empty."""

        async def listing() -> tuple[int, list[KeyValue], list[KeyValue]] | Lost:
            try:
                revision, kvs = await self.etcd.get_prefix(self.keys.of_kind(KeyKind.MACHINE))
                _, meta = await self.etcd.get_prefix(
                    self.keys.of_kind(KeyKind.MACHINE_META), revision
                )
            except WatchCompacted:
                return LOST  # compacted between the two reads: read both again
            return revision, kvs, meta

        revision, kvs, meta = await until_won(
            listing, "listing the machines kept racing etcd compactions"
        )
        docs = [d for d in (self.decode(kv) for kv in (*kvs, *meta)) if d is not None]
        return snapshot_of(revision, docs)

    def watch(
        self,
        from_revision: int,
        *,
        key: str | None = None,
        ranges: Sequence[tuple[str, bool]] = (),
    ) -> EventStream:
        """Typed events from `from_revision` on (use snapshot().revision + 1), resumed across
        disconnects without loss or duplicates; a compaction yields Resync. Pull-based.
        `key`: only that key (and what it prefixes); `ranges`: those (key, whether a prefix),
        on one stream."""
        return EventStream(
            self.etcd, self.keys, self.snapshot, from_revision, key=key, ranges=ranges,
            decoded=self.events,
        )  # fmt: skip

    def follow(
        self,
        *,
        start: Snapshot | None = None,
        view: ClusterView | None = None,
        copies: bool = False,
    ) -> AsyncIterator[Update]:
        """A snapshot (or `start`), then every watch batch folded into one view: see
        `fleetd.registry.follow`. The agents' copies (`placed/`, `global/`, `layout/`) are
        folded only with `copies` (the engine leader, which keeps them): the API's readers
        read the records, and skip the copies' events undecoded (the whole prefix is still
        one watch, so a transaction's events still come in one batch)."""
        skip = frozenset() if copies else COPIES

        def watch(from_revision: int) -> EventStream:
            return EventStream(
                self.etcd, self.keys, self.snapshot, from_revision, skip=skip, decoded=self.events
            )

        return follow(self.snapshot, watch, start=start, view=view)

    async def wait_for(self, predicate: Callable[[Snapshot | ClusterView], bool]) -> Snapshot:
        """The first view of the registry satisfying `predicate`: now, then after each watch
        batch that changed it. No deadline: the caller bounds it."""
        async with aclosing(self.follow(copies=True)) as updates:
            async for update in updates:
                if predicate(update.view):
                    return update.view.freeze()
        raise RuntimeError("the registry's watch ended")  # pragma: no cover
