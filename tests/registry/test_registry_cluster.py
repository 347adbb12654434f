"""A 3-member etcd cluster: the registry keeps working with one member killed."""

from __future__ import annotations

import asyncio

from registry_helpers import next_matching, retrying, unit

from fleetd.model import Machine
from fleetd.registry import EtcdConfig, KeyKind, Registry
from fleetd.sandbox.etcd import EtcdCluster
from tests.waiting import put


async def test_registry_survives_a_member_killed(etcd_cluster: EtcdCluster, key_prefix) -> None:
    config = EtcdConfig(etcd_cluster.endpoints, key_prefix=key_prefix, request_timeout=2.0)
    names = [f"c-{i:02d}.service" for i in range(20)]
    async with Registry(config) as reg:
        snap = await reg.snapshot()
        lease = await reg.register_machine(Machine("m1"), ttl=5)
        async with reg.watch(snap.revision + 1) as events:
            for name in names[:10]:
                await reg.create_job(name, unit())
            await asyncio.to_thread(etcd_cluster.members[0].kill)
            for name in names[10:]:
                await retrying(lambda name=name: reg.create_job(name, unit()))
            assert await retrying(lambda: reg.schedule(names[0], "m1"))
            _, seen = await next_matching(events, put(KeyKind.JOB, names[-1]), 30)
        final = await retrying(reg.snapshot)
        assert lease.alive and "m1" in final.machines  # the keep-alive found another member
        await retrying(lease.revoke)
    assert [e.ident for e in seen if put(KeyKind.JOB)(e)] == names
    assert set(final.jobs) == set(names) and final.placements[names[0]] == "m1"
