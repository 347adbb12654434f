"""Replacing a job's content in place, and destroying jobs under concurrent writers, against a
real etcd. The safety property throughout: no job ever points at missing content."""

from __future__ import annotations

import asyncio
import random

import pytest
from registry_helpers import state, unit

from fleetd.model import Job, JobState, Machine
from fleetd.registry import JobNotFound, Registry, RegistryConflict, Snapshot


def dangling(snap: Snapshot) -> list[str]:
    """Jobs whose content is missing (must never happen)."""
    return sorted(n for n, j in snap.jobs.items() if j.unit_hash not in snap.units)


def unused(snap: Snapshot) -> list[str]:
    """Contents no job uses (left behind)."""
    used = {j.unit_hash for j in snap.jobs.values()}
    return sorted(h for h in snap.units if h not in used)


# --- replace_job -----------------------------------------------------------------------------
async def test_replace_keeps_desired_state_and_placement_and_drops_unshared_content(
    registry: Registry,
) -> None:
    old, new = unit("old"), unit("new")
    await registry.create_job("a.service", old, JobState.LAUNCHED)
    lease = await registry.register_machine(Machine("m1"), ttl=10)
    assert await registry.schedule("a.service", "m1")
    job = await registry.replace_job("a.service", new, old.hash)
    assert job == Job("a.service", new.hash, JobState.LAUNCHED)
    snap = await registry.snapshot()
    assert snap.jobs["a.service"] == job
    assert set(snap.units) == {new.hash}  # the old content had no other user
    assert snap.placements["a.service"] == "m1"  # the agent replaces it in place
    await lease.revoke()


async def test_replace_keeps_old_content_another_job_uses(registry: Registry) -> None:
    shared, new = unit("shared"), unit("new")
    await registry.create_job("a.service", shared)
    await registry.create_job("b.service", shared)
    await registry.replace_job("a.service", new, shared.hash)
    snap = await registry.snapshot()
    assert set(snap.units) == {shared.hash, new.hash}
    # ... and onto content that already exists: shared, not duplicated
    await registry.replace_job("b.service", new, shared.hash)
    snap = await registry.snapshot()
    assert set(snap.units) == {new.hash} and dangling(snap) == []


async def test_replace_with_same_content_is_a_noop(registry: Registry) -> None:
    u = unit()
    await registry.create_job("a.service", u, JobState.LOADED)
    before = await registry.snapshot()
    assert await registry.replace_job("a.service", u, "0" * 40) == Job(
        "a.service", u.hash, JobState.LOADED
    )
    assert (await registry.snapshot()).jobs == before.jobs


async def test_replace_refused_when_missing_or_changed_meanwhile(registry: Registry) -> None:
    with pytest.raises(JobNotFound):
        await registry.replace_job("nope.service", unit(), "0" * 40)
    await registry.create_job("a.service", unit("one"))
    with pytest.raises(RegistryConflict, match="changed meanwhile"):
        await registry.replace_job("a.service", unit("two"), unit("zero").hash)
    assert (await registry.get_job("a.service")) == Job("a.service", unit("one").hash)


# --- destroy under load ----------------------------------------------------------------------
async def test_destroys_succeed_among_many_concurrent_submits(registry: Registry) -> None:
    # Before: destroy's guard covered every job key, so each concurrent submit broke it and
    # destroys ran out of retries (RegistryConflict). Now only writers of the same job or of
    # the same content can make a destroy retry.
    contents = [unit(f"c{i}") for i in range(5)]  # few contents: many jobs share each one
    await asyncio.gather(
        *(registry.create_job(f"old{i}.service", contents[i % 5]) for i in range(60))
    )
    destroyed = asyncio.Event()
    submitted: list[str] = []

    async def submitter(k: int) -> None:  # submits without pause until the destroys are done
        i = 0
        while not destroyed.is_set():
            name = f"new{k}-{i}.service"
            content = contents[i % 5] if i % 4 == 0 else unit(f"n{k}-{i}")
            await registry.create_job(name, content)
            submitted.append(name)
            i += 1

    submitters = [asyncio.create_task(submitter(k)) for k in range(8)]
    try:
        results = await asyncio.gather(
            *(registry.destroy(f"old{i}.service") for i in range(60)), return_exceptions=True
        )
    finally:
        destroyed.set()
        await asyncio.gather(*submitters)
    assert [r for r in results if isinstance(r, BaseException)] == []
    snap = await registry.snapshot()
    assert sorted(snap.jobs) == sorted(submitted)
    assert dangling(snap) == []
    assert unused(snap) == []


async def test_content_is_never_deleted_under_a_job_that_uses_it(registry: Registry) -> None:
    # Rounds of: destroy every user of one content while others submit and replace onto it.
    shared = unit("shared")
    for round_ in range(5):
        names = [f"r{round_}-{i}.service" for i in range(10)]
        await asyncio.gather(*(registry.create_job(n, shared) for n in names[:5]))
        await registry.create_job(f"r{round_}-x.service", unit(f"x{round_}"))
        ops = [registry.destroy(n) for n in names[:5]]
        ops += [registry.create_job(n, shared) for n in names[5:]]
        ops.append(registry.replace_job(f"r{round_}-x.service", shared, unit(f"x{round_}").hash))
        random.Random(round_).shuffle(ops)
        assert [r for r in await asyncio.gather(*ops, return_exceptions=True)
                if isinstance(r, BaseException)] == []  # fmt: skip
        snap = await registry.snapshot()
        assert dangling(snap) == [] and unused(snap) == []
        assert shared.hash in snap.units
    # the last users destroyed together: nothing is left behind
    snap = await registry.snapshot()
    await asyncio.gather(*(registry.destroy(n) for n in snap.jobs))
    assert (await registry.snapshot()).units == {}


async def test_destroy_many_reads_once_and_keeps_shared_content(registry: Registry) -> None:
    shared, alone = unit("shared"), unit("alone")
    for name in ("a.service", "b.service", "keep.service"):
        await registry.create_job(name, shared)
    await registry.create_job("c.service", alone)
    await registry.create_job("d.service", alone)
    assert await registry.schedule("a.service", "m1")
    lease = await registry.register_machine(Machine("m1", "10.0.0.1", {}), ttl=10)
    await registry.publish_state(state("a.service", "m1"), lease)

    errors = await registry.destroy_many(["a.service", "b.service", "c.service", "d.service",
                                          "ghost.service"])  # fmt: skip
    assert [type(e).__name__ if e else None for e in errors] == [
        None, None, None, None, "JobNotFound"]  # fmt: skip
    snap = await registry.snapshot()
    assert set(snap.jobs) == {"keep.service"}
    assert not snap.placements and not snap.states
    assert set(snap.units) == {shared.hash}  # still used by keep.service; `alone` collected
    assert await registry.destroy_many([]) == []
    await lease.revoke()


# --- restart requests ------------------------------------------------------------------------
async def test_restart_requests_are_in_the_view_replaced_and_go_with_the_job(
    registry: Registry,
) -> None:
    from fleetd.model import RestartRequest
    from fleetd.registry import KeyKind
    from tests.waiting import gone, put

    requested, deleted = put(KeyKind.RESTART), gone(KeyKind.RESTART)

    await registry.create_job("a.service", unit("a"), JobState.LAUNCHED)
    await registry.create_job("b.service", unit("b"), JobState.LAUNCHED)
    before = await registry.snapshot()
    await registry.request_restart("a.service", "m1", "t1")
    await registry.request_restart("a.service", "m2", "t2")
    await registry.request_restart("b.service", "m1", "t3")
    await registry.request_restart("a.service", "m1", "t4")  # a new ask replaces the old one
    snap = await registry.snapshot()
    assert snap.restarts == {
        ("a.service", "m1"): RestartRequest("a.service", "m1", "t4"),
        ("a.service", "m2"): RestartRequest("a.service", "m2", "t2"),
        ("b.service", "m1"): RestartRequest("b.service", "m1", "t3"),
    }
    with pytest.raises(JobNotFound):  # no job, no request: nothing written
        await registry.request_restart("nope.service", "m1", "t5")
    await registry.destroy("a.service")
    after = await registry.snapshot()
    assert set(after.restarts) == {("b.service", "m1")}  # b's request stays
    # the watch saw each request and the deletes of a's with its destroy
    seen = []

    async def follow() -> None:
        async with registry.watch(before.revision + 1) as events:
            async for event in events:
                if requested(event) or deleted(event):
                    seen.append(event)
                if sum(map(deleted, seen)) == 2:
                    return

    await asyncio.wait_for(follow(), 20)
    asks = [(e.doc.name, e.doc.machine_id, e.doc.token) for e in seen if requested(e)]
    assert asks == [
        ("a.service", "m1", "t1"),
        ("a.service", "m2", "t2"),
        ("b.service", "m1", "t3"),
        ("a.service", "m1", "t4"),
    ]
    removed = sorted(e.ident for e in seen if deleted(e))
    assert removed == [("a.service", "m1"), ("a.service", "m2")]


async def test_destroy_many_deletes_restart_requests(registry: Registry) -> None:
    for name in ("a.service", "b.service"):
        await registry.create_job(name, unit(name), JobState.LAUNCHED)
        await registry.request_restart(name, "m1", f"t-{name}")
    assert await registry.destroy_many(["a.service", "b.service"]) == [None, None]
    assert (await registry.snapshot()).restarts == {}
