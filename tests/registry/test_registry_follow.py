"""The one follower (`Registry.follow`) on a real etcd: snapshot first, one update per batch that
changed the view, nothing for writes that changed nothing, a compaction folded as a resync."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from registry_helpers import DEADLINE, state, unit

from fleetd.model import JobState, Machine
from fleetd.registry import EtcdConfig, KeyKind, Registry, Resync, Snapshot, Update
from fleetd.sandbox.etcd import EtcdServer


async def next_update(
    updates: AsyncIterator[Update], until: Callable[[Update], bool] = lambda u: True
) -> Update:
    """The first update satisfying `until`, within the deadline."""

    async def scan() -> Update:
        async for update in updates:
            if until(update):
                return update
        raise AssertionError("the follower ended")

    return await asyncio.wait_for(scan(), DEADLINE)


async def test_the_first_update_is_the_snapshot(registry: Registry) -> None:
    await registry.create_job("a.service", unit(), JobState.LAUNCHED)
    async with contextlib.aclosing(registry.follow()) as updates:
        first = await next_update(updates)
    assert first.events == () and first.everything and first.touched is None
    assert set(first.view.jobs) == {"a.service"}


async def test_a_transaction_is_one_update_naming_its_units(registry: Registry) -> None:
    async with contextlib.aclosing(registry.follow()) as updates:
        await next_update(updates)
        await registry.create_job("a.service", unit())  # content and job: one txn
        update = await next_update(updates)
        assert sorted(e.kind for e in update.events) == [KeyKind.JOB, KeyKind.UNIT]
        assert update.units == {"a.service"} and not update.machines
        assert update.view.jobs["a.service"].desired is JobState.INACTIVE
        await registry.destroy("a.service")  # job, content (and nothing else) in one txn
        update = await next_update(updates)
        assert update.touched == {"a.service"} and update.view.jobs == {}


async def test_a_write_that_changes_nothing_gives_no_update(registry: Registry) -> None:
    await registry.create_job("a.service", unit())
    lease = await registry.register_machine(Machine("m1", "10.0.0.1"), ttl=30)
    async with contextlib.aclosing(registry.follow()) as updates:
        first = await next_update(updates)
        revision = first.view.revision
        await registry.publish_state(state("a.service", "m1"), lease)
        await registry.publish_state(state("a.service", "m1"), lease)  # the same again
        await registry.schedule("a.service", "m1")
        seen = [await next_update(updates)]
        while "a.service" not in seen[-1].view.placements:
            seen.append(await next_update(updates))
    # the second put never surfaced (replayed history comes in one batch: maybe one update)
    assert [e.kind for u in seen for e in u.events] == [KeyKind.STATE, KeyKind.SCHEDULE]
    assert seen[-1].view.revision > revision
    await lease.revoke()


async def test_a_machine_touches_any_unit(registry: Registry) -> None:
    async with contextlib.aclosing(registry.follow()) as updates:
        await next_update(updates)
        lease = await registry.register_machine(Machine("m1"), ttl=30)
        update = await next_update(updates)
        assert update.machines and update.touched is None and "m1" in update.view.machines
        await lease.revoke()
        update = await next_update(updates, lambda u: "m1" not in u.view.machines)
        assert update.machines


async def test_start_from_a_given_snapshot_and_view(registry: Registry) -> None:
    """A reader that listed a few keys itself (the API's waits) follows from there."""
    await registry.create_job("a.service", unit("a"))
    partial = await registry.units_snapshot(["a.service"])
    async with contextlib.aclosing(registry.follow(start=partial)) as updates:
        first = await next_update(updates)
        assert first.view.revision == partial.revision and set(first.view.jobs) == {"a.service"}
        await registry.create_job("b.service", unit("b"))
        update = await next_update(updates)
    assert set(update.view.jobs) == {"a.service", "b.service"}


async def test_compaction_while_behind_is_one_resync(private_etcd: EtcdServer, key_prefix) -> None:
    config = EtcdConfig(private_etcd.endpoints, key_prefix=key_prefix)
    async with Registry(config) as reg:
        await reg.create_job("a.service", unit("a"))
        start = await reg.snapshot()
        await reg.create_job("b.service", unit("b"))
        await reg.destroy("a.service")
        await reg.compact()
        async with contextlib.aclosing(reg.follow(start=start)) as updates:
            await next_update(updates)
            update = await next_update(updates)
            assert [type(e) for e in update.events] == [Resync] and update.everything
            assert set(update.view.jobs) == {"b.service"}
            assert update.view.freeze() == _jobs_units_only(await reg.snapshot())


def _jobs_units_only(snapshot: Snapshot) -> Snapshot:
    return Snapshot(snapshot.revision, jobs=snapshot.jobs, units=snapshot.units)
