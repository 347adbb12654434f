"""One machine's part of the registry on a real etcd: what an agent reads (`follow_machine`)
and the copies the writers keep for it (`placed/`, `global/`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from fleetd.model import Assignment, GlobalJob, Job, JobState, UnitContent
from fleetd.registry import JobNotFound, Registry, Update
from fleetd.registry.fold import Changed
from fleetd.registry.keys import KeyKind
from fleetd.unit import parse_unit
from tests.registry.registry_helpers import DEADLINE

PLAIN = parse_unit("[Service]\nExecStart=/bin/true\n")
OTHER = parse_unit("[Service]\nExecStart=/bin/false\n")
GLOBAL = parse_unit("[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n")
L, R = JobState.LAUNCHED, JobState.LOADED


async def place(registry: Registry, name: str, machine: str) -> None:
    """Place as the engine does: with the job it planned from, copied to the machine."""
    job = await registry.get_job(name)
    assert job is not None
    snap = await registry.snapshot()
    assert await registry.place([(name, None, machine)], {name: job}, snap.revision) == [True]


async def next_update(updates: AsyncIterator[Update], predicate) -> Update:
    async def scan() -> Update:
        async for update in updates:
            if predicate(update):
                return update
        raise AssertionError("the follower ended")

    return await asyncio.wait_for(scan(), DEADLINE)


async def test_an_agent_reads_its_own_units_the_global_ones_and_nothing_else(
    registry: Registry,
) -> None:
    await registry.create_job("a.service", PLAIN, L)
    await registry.create_job("b.service", OTHER, L)
    await registry.create_job("w.service", GLOBAL, R)  # its Global copy comes with it
    await place(registry, "a.service", "m1")
    await place(registry, "b.service", "m2")
    assert await registry.mark_index("engine")
    async with aclosing(registry.follow_machine("m1")) as updates:
        first = await anext(updates)
        view = first.view
        assert dict(view.jobs) == {
            "a.service": Job("a.service", PLAIN.hash, L),
            "w.service": Job("w.service", GLOBAL.hash, R),
        }
        assert dict(view.placements) == {"a.service": "m1"}
        assert set(view.units) == {PLAIN.hash, GLOBAL.hash}  # not b's: not held here
        assert not view.assignments and not view.global_jobs  # read as the records
        # another machine's unit: no update at all; this machine's next one: one
        await registry.create_job("c.service", PLAIN, L)
        await place(registry, "c.service", "m2")
        await registry.create_job("d.service", OTHER, L)
        await place(registry, "d.service", "m1")
        update = await next_update(updates, lambda u: "d.service" in u.view.placements)
        assert "c.service" not in update.view.jobs
        assert {e.ident for e in update.events} == {"d.service", OTHER.hash}
        assert update.view.units[OTHER.hash] == UnitContent(OTHER)  # fetched by its hash


async def test_job_changes_reach_the_copy_and_the_agent(registry: Registry) -> None:
    await registry.create_job("a.service", PLAIN, L)
    await place(registry, "a.service", "m1")
    assert await registry.mark_index("engine")
    async with aclosing(registry.follow_machine("m1")) as updates:
        await anext(updates)
        await registry.set_desired("a.service", R)
        update = await next_update(updates, lambda u: u.view.jobs["a.service"].desired is R)
        assert update.touched == {"a.service"}
        copies = await registry.snapshot()
        assert copies.assignments[("m1", "a.service")] == Assignment(
            "a.service", "m1", PLAIN.hash, R
        )

        await registry.replace_job("a.service", OTHER, PLAIN.hash)
        update = await next_update(
            updates, lambda u: u.view.jobs["a.service"].unit_hash == OTHER.hash
        )
        assert OTHER.hash in update.view.units and PLAIN.hash not in update.view.units

        await registry.replace_job("a.service", GLOBAL, OTHER.hash)  # becomes Global
        copies = await registry.snapshot()
        assert copies.global_jobs["a.service"] == GlobalJob("a.service", GLOBAL.hash, R)

        await registry.destroy("a.service")
        update = await next_update(updates, lambda u: "a.service" not in u.view.jobs)
        assert not update.view.placements and not update.view.units
    left = await registry.snapshot()
    assert not left.assignments and not left.global_jobs  # the destroy took both copies


async def test_a_machine_follower_waits_for_the_copies_to_be_complete(
    registry: Registry,
) -> None:
    """Until the engine leader says the copies are complete, an agent is handed nothing: an
    empty range would otherwise stop every unit of its machine."""
    async with aclosing(registry.follow_machine("m1")) as updates:
        first = asyncio.ensure_future(anext(updates))
        await registry.create_job("a.service", PLAIN, L)
        await place(registry, "a.service", "m1")
        assert not first.done()
        assert await registry.mark_index("engine")
        marked = (await registry.snapshot()).revision
        update = await asyncio.wait_for(first, DEADLINE)
        assert update.everything and update.view.revision >= marked
        assert dict(update.view.placements) == {"a.service": "m1"}
        assert not await registry.mark_index("another")  # written once


async def test_restart_requests_of_other_machines_are_not_handed_over(
    registry: Registry,
) -> None:
    await registry.create_job("w.service", GLOBAL, L)
    assert await registry.mark_index("engine")
    async with aclosing(registry.follow_machine("m1")) as updates:
        await anext(updates)
        await registry.request_restart("w.service", "m2", "t2")
        await registry.request_restart("w.service", "m1", "t1")
        update = await next_update(updates, lambda u: bool(u.view.restarts))
        assert set(update.view.restarts) == {("w.service", "m1")}
        assert all(
            not (isinstance(e, Changed) and e.kind is KeyKind.RESTART and e.ident[1] == "m2")
            for e in update.events
        )


async def test_desired_states_set_together_keep_every_copy(registry: Registry) -> None:
    """`set_desired_many` (the `x/units` PUTs that set a desired state alone): each job and its
    copies — its machine's, its Global one — written as `set_desired` would, in few round
    trips; a unit already so is not written; a missing one is JobNotFound, the others done."""
    names = [f"u{i}.service" for i in range(150)]  # more than one txn of reads and of writes
    await registry.create_many([(n, PLAIN, R) for n in names])
    await place(registry, "u7.service", "m1")
    await registry.create_job("g.service", GLOBAL, R)
    await registry.create_job("same.service", OTHER, L)
    before = await registry.snapshot()
    changes = [(n, L) for n in names] + [("g.service", L), ("gone.service", L), ("same.service", L)]
    results = await registry.set_desired_many(changes)
    assert [r.desired for r in results[:151]] == [L] * 151  # type: ignore[union-attr]
    assert isinstance(results[151], JobNotFound)
    assert results[152] == before.jobs["same.service"]
    after = await registry.snapshot()
    assert all(after.jobs[n].desired is L for n in [*names, "g.service"])
    assert after.assignments[("m1", "u7.service")] == Assignment("u7.service", "m1", PLAIN.hash, L)
    assert after.global_jobs["g.service"] == GlobalJob("g.service", GLOBAL.hash, L)
    # one revision per round trip of writes, not one per unit
    assert after.revision - before.revision <= 4
