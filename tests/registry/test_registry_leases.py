"""Machines and states under a kept-alive lease, and the engine leader election."""

from __future__ import annotations

import asyncio

import pytest
from registry_helpers import DEADLINE, next_matching, state, unit

from fleetd.model import LeaderInfo, Machine
from fleetd.registry import (
    KeyKind,
    MachineIdInUse,
    Registry,
)
from tests.waiting import gone, put


async def test_lease_expiry_removes_machine_and_states(registry: Registry) -> None:
    lease = await registry.register_machine(Machine("m1", "10.0.0.1"), ttl=1)
    await registry.create_job("a.service", unit())
    await registry.publish_state(state("a.service", "m1"), lease)
    await registry.publish_state(state("b.service", "m1"), lease)
    snap = await registry.snapshot()
    assert "m1" in snap.machines and len(snap.states) == 2
    async with registry.watch(snap.revision + 1) as events:
        await lease.release()  # the agent dies: no more keep-alives
        down, seen = await next_matching(events, gone(KeyKind.MACHINE))
        lost = {e.ident for e in seen if gone(KeyKind.STATE)(e)}
        while len(lost) < 2:
            _, more = await next_matching(events, gone(KeyKind.STATE))
            lost |= {e.ident for e in more if gone(KeyKind.STATE)(e)}
    assert down.ident == "m1"
    assert lost == {("a.service", "m1"), ("b.service", "m1")}
    after = await registry.snapshot()
    assert after.machines == {} and after.states == {}
    assert set(after.jobs) == {"a.service"}  # jobs are not on a lease


async def test_keep_alive_outlives_the_ttl(registry: Registry) -> None:
    lease = await registry.register_machine(Machine("m1"), ttl=1)
    await asyncio.wait_for(lease.wait_renewals(5), DEADLINE)  # > 1 s of renewals at TTL/3
    assert lease.alive
    assert "m1" in (await registry.snapshot()).machines
    await lease.revoke()
    assert "m1" not in (await registry.snapshot()).machines


async def test_unrenewed_for_fires_only_when_renewals_stop(registry: Registry) -> None:
    # the agent's fencing timer: renewals every TTL/3 keep restarting it
    lease = await registry.register_machine(Machine("m1"), ttl=1)
    quiet = asyncio.create_task(lease.unrenewed_for(0.8))
    await asyncio.wait_for(lease.wait_renewals(lease.renewals + 3), DEADLINE)
    assert not quiet.done()
    await lease.release()  # etcd unreachable, as the agent sees it: no more renewals
    assert await asyncio.wait_for(quiet, DEADLINE) is True
    assert lease.alive  # fired before the lease is gone: the units stop before they move


async def test_unrenewed_for_a_lost_lease_is_false_at_once(registry: Registry) -> None:
    # a lease already lost is no reason to fence: the agent registers again instead
    lease = await registry.register_machine(Machine("m1"), ttl=30)
    await lease.revoke()
    assert await asyncio.wait_for(lease.unrenewed_for(25), DEADLINE) is False


async def test_reattach_to_a_live_lease(registry: Registry) -> None:
    first = await registry.register_machine(Machine("m1", "10.0.0.1"), ttl=30)
    assert not first.reattached
    await first.release()  # fleetd restarts; the lease still runs
    again = await registry.register_machine(Machine("m1", "10.0.0.2"), ttl=30, lease_id=first.id)
    assert again.reattached and again.id == first.id
    assert (await registry.snapshot()).machines["m1"].public_ip == "10.0.0.2"
    await again.revoke()
    fresh = await registry.register_machine(Machine("m1"), ttl=30, lease_id=first.id)
    assert not fresh.reattached and fresh.id != first.id  # revoked: a new lease
    await fresh.revoke()


async def test_revoke_sends_machine_down(registry: Registry) -> None:
    lease = await registry.register_machine(Machine("m1"), ttl=30)
    snap = await registry.snapshot()
    async with registry.watch(snap.revision + 1) as events:
        await lease.revoke()
        down, _ = await next_matching(events, gone(KeyKind.MACHINE))
    assert down.ident == "m1"


async def test_a_machine_id_held_by_another_lease_is_refused(registry: Registry) -> None:
    lease = await registry.register_machine(Machine("m1"), ttl=30)
    with pytest.raises(MachineIdInUse, match="another live fleetd"):
        await registry.register_machine(Machine("m1"), ttl=30)
    await lease.revoke()


async def test_publish_and_remove_state(registry: Registry) -> None:
    lease = await registry.register_machine(Machine("m1"), ttl=30)
    await registry.publish_state(state("a.service", "m1", "activating"), lease)
    await registry.publish_state(state("a.service", "m1", "active"), lease)
    snap = await registry.snapshot()
    assert snap.states[("a.service", "m1")].active == "active"
    await registry.remove_state("a.service", "m1")
    assert (await registry.snapshot()).states == {}
    await lease.revoke()


async def test_a_burst_of_states_is_published_in_few_revisions(registry: Registry) -> None:
    lease = await registry.register_machine(Machine("m1"), 30)
    before = (await registry.snapshot()).revision
    burst = [state(f"u{i}.service", "m1") for i in range(250)]
    await registry.publish_states(burst, lease)
    snapshot = await registry.snapshot()
    assert {(s.name, s.machine_id) for s in burst} <= set(snapshot.states)
    assert snapshot.revision - before == 3  # 100 states a txn, not one revision each
    await lease.revoke()  # on the machine's lease: gone with it
    assert not (await registry.snapshot()).states


async def test_election_campaign_resign_and_observe(registry: Registry) -> None:
    a, b = LeaderInfo("machine-a", "0.1"), LeaderInfo("machine-b", "0.1")
    lease_a = await registry.grant_lease(30)
    lease_b = await registry.grant_lease(30)
    observed: asyncio.Queue[LeaderInfo | None] = asyncio.Queue()

    async def observe() -> None:
        async for leader in registry.observe_leader():
            await observed.put(leader)

    observer = asyncio.create_task(observe())
    try:
        assert await asyncio.wait_for(observed.get(), DEADLINE) is None
        lead_a = await asyncio.wait_for(registry.campaign(a, lease_a), DEADLINE)
        assert await asyncio.wait_for(observed.get(), DEADLINE) == a
        waiting = asyncio.create_task(registry.campaign(b, lease_b))
        assert await registry.leader() == a
        assert not waiting.done()
        assert await registry.resign(lead_a)
        lead_b = await asyncio.wait_for(waiting, DEADLINE)  # woken by the watch, not a poll
        assert lead_b.info == b and await registry.leader() == b
        assert not await registry.resign(lead_a)  # no longer ours
        changes = [await asyncio.wait_for(observed.get(), DEADLINE) for _ in range(2)]
        assert changes == [None, b]
    finally:
        observer.cancel()
        await asyncio.gather(observer, return_exceptions=True)
        await lease_a.revoke()
        await lease_b.revoke()


async def test_leader_lease_expiry_hands_over(registry: Registry) -> None:
    a, b = LeaderInfo("machine-a"), LeaderInfo("machine-b")
    lease_a = await registry.grant_lease(1)
    lease_b = await registry.grant_lease(30)
    await registry.campaign(a, lease_a)
    snap = await registry.snapshot()
    async with registry.watch(snap.revision + 1) as events:
        waiting = asyncio.create_task(registry.campaign(b, lease_b))
        await lease_a.release()  # the leader's fleetd is killed
        await next_matching(events, gone(KeyKind.LEADER))
        lead_b = await asyncio.wait_for(waiting, DEADLINE)
        new, _ = await next_matching(events, put(KeyKind.LEADER))
    assert new.doc == b and lead_b.info == b
    await lease_b.revoke()


async def test_campaign_again_on_the_same_lease_keeps_leadership(registry: Registry) -> None:
    lease = await registry.grant_lease(30)
    first = await registry.campaign(LeaderInfo("m1", "1"), lease)
    again = await asyncio.wait_for(registry.campaign(LeaderInfo("m1", "2"), lease), DEADLINE)
    assert again.revision == first.revision
    assert await registry.leader() == LeaderInfo("m1", "2")
    await lease.revoke()
    assert await registry.leader() is None
