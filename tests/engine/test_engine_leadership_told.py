"""The engine tells whoever asked (the daemon's STATUS= for `systemctl status fleet`) when it
starts and stops leading, against a real etcd: no one polls `is_leader`."""

from __future__ import annotations

import asyncio

from fleetd.engine import Engine
from fleetd.registry import EtcdConfig, Registry
from tests.running import cancelled, running

M1, M2 = "1" * 32, "2" * 32
DEADLINE = 10.0


async def test_each_engine_is_told_when_it_leads_and_when_it_stops(
    etcd_config: EtcdConfig,
) -> None:
    told: dict[str, list[bool]] = {M1: [], M2: []}
    async with Registry(etcd_config) as r1, Registry(etcd_config) as r2:
        e1 = Engine(r1, M1, lease_ttl=2, on_leadership=told[M1].append)
        e2 = Engine(r2, M2, lease_ttl=2, on_leadership=told[M2].append)
        async with running(e1.run()) as t1:
            await asyncio.wait_for(e1.is_leader.wait(), DEADLINE)
            async with running(e2.run()):
                assert told == {M1: [True], M2: []}
                await cancelled(t1)  # e1 stops (its lease runs out), e2 takes over
                assert told == {M1: [True, False], M2: []}
                await asyncio.wait_for(e2.is_leader.wait(), DEADLINE)
                assert told == {M1: [True, False], M2: [True]}
            assert told == {M1: [True, False], M2: [True, False]}
