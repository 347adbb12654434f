"""A 3-member etcd cluster loses a member while machines use it (in process: real systemd machines,
real agents and engine, real etcd members; the registry is given all three endpoints).

The member killed is etcd's raft leader (a new election is needed). Afterwards the
machines keep their leases (no unit moves or restarts) and a unit started after the loss is
placed and runs.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fleetd.model import JobState
from fleetd.registry import EtcdConfig, KeyKind, Registry
from fleetd.sandbox.etcd import EtcdCluster, EtcdServer
from tests.faults.harness import report
from tests.faults.inprocess import LOOP, Node
from tests.running import engine_running
from tests.waiting import gone, retrying, until

pytestmark = pytest.mark.root

TTL = 3
DEADLINE = 30.0  # a bound against hanging, not a speed goal


def _raft_leader(cluster: EtcdCluster) -> EtcdServer:
    status = json.loads(
        cluster.members[0].etcdctl(
            "endpoint", "status", "-w", "json", "--endpoints", ",".join(cluster.endpoints)
        )
    )
    leader = status[0]["Status"]["leader"]
    by_endpoint = {m.endpoint: m for m in cluster.members}
    return next(
        by_endpoint[e["Endpoint"].split("//")[-1]]
        for e in status
        if e["Status"]["header"]["member_id"] == leader
    )


def _active(snapshot, unit: str) -> str | None:  # type: ignore[no-untyped-def]
    return next(
        (m for (n, m), st in snapshot.states.items() if n == unit and st.active == "active"), None
    )


async def test_member_killed_machines_stay_and_a_new_unit_runs(
    etcd_cluster: EtcdCluster, key_prefix: str
) -> None:
    config = EtcdConfig(etcd_cluster.endpoints, key_prefix=key_prefix, request_timeout=2.0)
    async with Registry(config) as reg:
        nodes = [Node("ea", reg, TTL, "127.0.0.31"), Node("eb", reg, TTL, "127.0.0.32")]
        try:
            for n in nodes:
                await n.start()
            async with engine_running(reg, nodes[0].id, lease_ttl=TTL):
                await reg.create_job("before.service", LOOP, JobState.LAUNCHED)
                snap = await until(
                    reg, lambda s: _active(s, "before.service") is not None, DEADLINE
                )
                host = next(n for n in nodes if n.id == _active(snap, "before.service"))
                pid = await host.manager.main_pid("before.service")
                seen: list[object] = []

                async def follow() -> None:
                    async with reg.watch(snap.revision + 1) as events:
                        async for ev in events:
                            seen.append(ev)

                victim = await asyncio.to_thread(_raft_leader, etcd_cluster)
                watcher = asyncio.create_task(follow())  # opened before the loss, kept after it
                try:
                    killed = time.monotonic()
                    await asyncio.to_thread(victim.kill)
                    # written while etcd elects a new raft leader: retried, as any client must
                    await retrying(
                        lambda: reg.create_job("after.service", LOOP, JobState.LAUNCHED), DEADLINE
                    )
                    written = time.monotonic()
                    snap = await retrying(
                        lambda: until(
                            reg, lambda s: _active(s, "after.service") is not None, DEADLINE
                        ),
                        DEADLINE,
                    )
                    ran = time.monotonic()
                finally:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                assert any(getattr(e, "revision", 0) > 0 for e in seen)  # the watch kept delivering
                assert not any(gone(KeyKind.MACHINE)(e) for e in seen)
                assert set(snap.machines) == {n.id for n in nodes}  # both leases kept alive
                assert await host.manager.main_pid("before.service") == pid  # not restarted
                assert _active(snap, "before.service") == host.id  # not moved
                report(
                    f"etcd 3 members, the raft leader killed (member {victim.name})",
                    f"a unit created {written - killed:.2f} s after the kill ran "
                    f"{ran - killed:.2f} s after it; 0 machines lost, 0 units moved or restarted",
                )
        finally:
            await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)
