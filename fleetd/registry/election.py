"""The election room: which engine leads (`engine/leader`), and waiting for it to change.

A create-if-absent txn carrying the candidate's lease wins; losers watch the key and try again
when it is deleted (resign, or the leader's lease expired) — by a watch, never by polling.
Resigning is guarded on the key's create revision, so a stale leader cannot delete the key of
its successor. `observe_leader` follows the leader key alone through the one follower; its
watch relists the whole registry after a compaction, as every watch does (hence the `Reads`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import structlog

from fleetd.model import LeaderInfo
from fleetd.registry.etcd import EtcdClient
from fleetd.registry.fold import Removed, Resync, Snapshot, snapshot_of
from fleetd.registry.follow import follow
from fleetd.registry.keys import KeyLayout
from fleetd.registry.kv import Cmp, Delete, Get, Put
from fleetd.registry.leases import Lease
from fleetd.registry.reads import Reads
from fleetd.registry.room import Room
from fleetd.registry.watch import retry_unavailable

__all__ = ["Election", "Leadership"]

log = structlog.get_logger(__name__)


class Leadership:
    """Proof of having won the engine election: the leader key's create revision."""

    def __init__(self, info: LeaderInfo, lease: Lease, revision: int) -> None:
        self.info = info
        self.lease = lease
        self.revision = revision

    def __repr__(self) -> str:
        return f"Leadership({self.info.machine_id!r}, revision={self.revision})"


class Election(Room):
    """The engine leader election, and observing who leads."""

    def __init__(self, etcd: EtcdClient, keys: KeyLayout, reads: Reads) -> None:
        super().__init__(etcd, keys)
        self._reads = reads

    async def campaign(self, info: LeaderInfo, lease: Lease) -> Leadership:
        """Block until this engine holds `engine/leader` on `lease`.

        Create-if-absent txn; while another holds it, wait (by a watch, not polling) for its key
        to be deleted (resign or lease expiry), then try again. An unreachable etcd is waited
        out (`retry_unavailable`).
        """
        key = self.keys.leader
        while True:
            res = await retry_unavailable(
                lambda: self.etcd.txn(
                    [Cmp(key, "create", "==", 0)], [Put(key, info.encode(), lease.id)], [Get(key)]
                ),
                "registry.campaign_retry",
            )
            if res.succeeded:
                log.info("registry.leader_elected", machine=info.machine_id, lease=lease.id)
                return Leadership(info, lease, res.revision)
            current = res.gets[0][0] if res.gets[0] else None
            if current is not None and current.lease == lease.id:
                await retry_unavailable(
                    lambda: self.etcd.put(key, info.encode(), lease.id), "registry.campaign_retry"
                )
                log.info("registry.leader_resumed", machine=info.machine_id, lease=lease.id)
                return Leadership(info, lease, current.create_revision)
            log.info("registry.leader_waiting", machine=info.machine_id)
            await self._until_deleted(res.revision + 1)

    async def _until_deleted(self, from_revision: int) -> None:
        """Until the leader key is deleted after `from_revision` (the watch resumes across
        disconnects); after a compaction, at once: the caller reads the key again anyway."""
        async with self._reads.watch(from_revision, key=self.keys.leader) as events:
            async for event in events:
                if isinstance(event, Removed | Resync):
                    return

    async def resign(self, leadership: Leadership) -> bool:
        """Give up leadership if still held (guarded on the key's create revision)."""
        key = self.keys.leader
        res = await self.etcd.txn([Cmp(key, "create", "==", leadership.revision)], [Delete(key)])
        log.info("registry.leader_resigned", machine=leadership.info.machine_id, held=res.succeeded)
        return res.succeeded

    async def leader(self) -> LeaderInfo | None:
        return await self.read(self.keys.leader, LeaderInfo)

    async def observe_leader(self) -> AsyncIterator[LeaderInfo | None]:
        """The current leader (or None), then every change of leader."""

        async def leader_only() -> Snapshot:
            revision, kvs = await self.etcd.get_prefix(self.keys.leader)
            return snapshot_of(revision, (d for d in map(self.decode, kvs) if d is not None))

        current: LeaderInfo | bool | None = False  # nothing yielded yet
        updates = follow(leader_only, lambda rev: self._reads.watch(rev, key=self.keys.leader))
        async with aclosing(updates):
            async for update in updates:
                if update.view.leader != current:
                    current = update.view.leader
                    yield current
