"""Jobs, unit content, placements and the one-revision snapshot, against a real etcd."""

from __future__ import annotations

import asyncio

import pytest
from registry_helpers import state, unit

from fleetd.errors import PermanentError
from fleetd.model import Job, JobState, Machine
from fleetd.registry import (
    JobNotFound,
    Registry,
    Submitted,
    UnitExists,
)


async def test_create_job_stores_job_and_content(registry: Registry) -> None:
    u = unit()
    assert await registry.create_job("hello.service", u) is Submitted.CREATED
    assert await registry.get_job("hello.service") == Job("hello.service", u.hash)
    content = await registry.get_unit(u.hash)
    assert content is not None and content.unit == u


async def test_resubmitting_identical_content_is_a_noop(registry: Registry) -> None:
    await registry.create_job("hello.service", unit(), JobState.LAUNCHED)
    snap = await registry.snapshot()
    assert await registry.create_job("hello.service", unit()) is Submitted.UNCHANGED
    after = await registry.snapshot()
    assert after.jobs == snap.jobs  # desired state untouched, nothing rewritten
    assert after.jobs["hello.service"].desired is JobState.LAUNCHED


async def test_different_content_is_refused_until_destroyed(registry: Registry) -> None:
    await registry.create_job("hello.service", unit("v1"))
    with pytest.raises(UnitExists, match=r"already exists.*destroy it first") as exc:
        await registry.create_job("hello.service", unit("v2"))
    assert isinstance(exc.value, PermanentError)
    assert (await registry.get_job("hello.service")).unit_hash == unit("v1").hash
    await registry.destroy("hello.service")
    assert await registry.create_job("hello.service", unit("v2")) is Submitted.CREATED


async def test_jobs_share_content_by_hash(registry: Registry) -> None:
    await registry.create_job("a.service", unit())
    await registry.create_job("b.service", unit())  # content already stored
    snap = await registry.snapshot()
    assert set(snap.units) == {unit().hash}
    assert {j.unit_hash for j in snap.jobs.values()} == {unit().hash}


async def test_set_desired(registry: Registry) -> None:
    await registry.create_job("hello.service", unit())
    job = await registry.set_desired("hello.service", JobState.LAUNCHED)
    assert job.desired is JobState.LAUNCHED
    assert (await registry.get_job("hello.service")).desired is JobState.LAUNCHED


async def test_set_desired_of_missing_job(registry: Registry) -> None:
    with pytest.raises(JobNotFound, match=r"nope\.service"):
        await registry.set_desired("nope.service", JobState.LOADED)


async def test_destroy_removes_job_schedule_states_and_unshared_content(
    registry: Registry,
) -> None:
    await registry.create_job("a.service", unit("a"))
    await registry.create_job("b.service", unit("shared"))
    await registry.create_job("c.service", unit("shared"))
    lease = await registry.register_machine(Machine("m1"), ttl=10)
    for name in ("a.service", "b.service"):
        assert await registry.schedule(name, "m1")
        await registry.publish_state(state(name, "m1"), lease)
    await registry.destroy("a.service")
    await registry.destroy("b.service")
    snap = await registry.snapshot()
    assert set(snap.jobs) == {"c.service"}
    assert set(snap.units) == {unit("shared").hash}  # still used by c
    assert snap.placements == {}
    assert snap.states == {}
    await registry.destroy("c.service")
    assert (await registry.snapshot()).units == {}
    await lease.revoke()


async def test_destroy_missing_job(registry: Registry) -> None:
    with pytest.raises(JobNotFound):
        await registry.destroy("nope.service")


async def test_get_missing(registry: Registry) -> None:
    assert await registry.get_job("nope.service") is None
    assert await registry.get_unit("0" * 40) is None


async def test_snapshot_reads_everything_at_one_revision(registry: Registry) -> None:
    await registry.create_job("a.service", unit(), JobState.LAUNCHED)
    lease = await registry.register_machine(Machine("m1", "10.0.0.1", {"role": "web"}), ttl=10)
    assert await registry.schedule("a.service", "m1")
    await registry.publish_state(state("a.service", "m1"), lease)
    snap = await registry.snapshot()
    await registry.create_job("b.service", unit("b"))  # after the snapshot
    assert set(snap.jobs) == {"a.service"}
    assert snap.placements["a.service"] == "m1"
    assert snap.machines["m1"].metadata == {"role": "web"}
    assert snap.states[("a.service", "m1")].active == "active"
    assert snap.units.keys() == {unit().hash}
    assert snap.revision > 0
    assert (await registry.snapshot()).revision > snap.revision
    await lease.revoke()


async def test_schedule_and_unschedule_compare_and_swap(registry: Registry) -> None:
    await registry.create_job("a.service", unit())
    assert await registry.schedule("a.service", "m1")
    assert not await registry.schedule("a.service", "m2")  # expected None, but it is on m1
    assert not await registry.schedule("a.service", "m2", expected="m3")
    assert await registry.schedule("a.service", "m2", expected="m1")
    assert not await registry.unschedule("a.service", "m1")
    assert await registry.unschedule("a.service", "m2")
    assert (await registry.snapshot()).placements == {}


async def test_schedule_needs_the_job(registry: Registry) -> None:
    assert not await registry.schedule("ghost.service", "m1")


async def test_racing_schedulers_exactly_one_wins(registry: Registry, etcd_config) -> None:
    await registry.create_job("race.service", unit())
    others = [Registry(etcd_config) for _ in range(4)]
    for r in others:
        await r.connect()
    try:
        racers = [registry, *others]
        results = await asyncio.gather(
            *(r.schedule("race.service", f"m{i}") for i, r in enumerate(racers))
        )
    finally:
        for r in others:
            await r.close()
    assert sorted(results) == [False, False, False, False, True]
    winner = results.index(True)
    assert (await registry.snapshot()).placements["race.service"] == f"m{winner}"


async def test_concurrent_submits_of_one_name_store_one_file(registry: Registry) -> None:
    results = await asyncio.gather(
        registry.create_job("x.service", unit("one")),
        registry.create_job("x.service", unit("two")),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Submitted", "UnitExists"]
    snap = await registry.snapshot()
    assert len(snap.units) == 1 and snap.jobs["x.service"].unit_hash in snap.units


async def test_place_many_each_wins_or_loses_on_its_own_guard(registry: Registry) -> None:
    for name in ("a.service", "b.service", "c.service"):
        await registry.create_job(name, unit())
    assert await registry.schedule("b.service", "m1")
    before = (await registry.snapshot()).revision
    won = await registry.place([
        ("a.service", None, "m1"),  # unplaced -> m1: wins
        ("b.service", "m9", "m2"),  # expected m9 but on m1: loses
        ("c.service", None, "m3"),  # wins
        ("ghost.service", None, "m1"),  # no such job: loses
    ])  # fmt: skip
    assert won == [True, False, True, False]
    snap = await registry.snapshot()
    assert dict(snap.placements) == {"a.service": "m1", "b.service": "m1", "c.service": "m3"}
    assert snap.revision == before + 1  # the winners of one round trip: one revision

    won = await registry.place([("a.service", "m1", None), ("b.service", "m1", "m2")])
    assert won == [True, True]
    assert dict((await registry.snapshot()).placements) == {"b.service": "m2", "c.service": "m3"}


async def test_place_more_than_one_round_trip_holds(registry: Registry) -> None:
    names = [f"u{i:03d}.service" for i in range(250)]  # three nested-txn round trips
    await asyncio.gather(*(registry.create_job(n, unit()) for n in names))
    won = await registry.place([(n, None, f"m{i % 7}") for i, n in enumerate(names)])
    assert won == [True] * 250
    placements = (await registry.snapshot()).placements
    assert placements == {n: f"m{i % 7}" for i, n in enumerate(names)}


async def test_create_many_answers_as_create_job_would(registry: Registry) -> None:
    await registry.create_job("same.service", unit("a"), JobState.LAUNCHED)
    await registry.create_job("other.service", unit("b"))
    new = [(f"n{i:02d}.service", unit("a"), JobState.LAUNCHED) for i in range(60)]  # 2 txns
    results = await registry.create_many([
        *new,
        ("same.service", unit("a"), JobState.INACTIVE),  # identical content: unchanged
        ("other.service", unit("c"), JobState.INACTIVE),  # different content: refused
    ])  # fmt: skip
    assert results[:60] == [Submitted.CREATED] * 60
    assert results[60] is Submitted.UNCHANGED
    assert isinstance(results[61], UnitExists)
    snap = await registry.snapshot()
    assert all(snap.jobs[n].desired is JobState.LAUNCHED for n, _, _ in new)
    assert snap.jobs["same.service"].desired is JobState.LAUNCHED  # untouched
    assert snap.jobs["other.service"].unit_hash == unit("b").hash
    assert set(snap.units) == {unit("a").hash, unit("b").hash}  # no content of a refused job


async def test_machines_snapshot_reads_only_machines(registry: Registry) -> None:
    await registry.create_job("a.service", unit(), JobState.LAUNCHED)
    lease = await registry.register_machine(Machine("m1", "10.0.0.1", {"role": "web"}), ttl=10)
    await registry.set_machine_metadata({"m1": {"disk": "ssd"}})
    snap = await registry.machines_snapshot()
    assert set(snap.machines) == {"m1"} and snap.dynamic_metadata["m1"] == {"disk": "ssd"}
    assert not snap.jobs and not snap.units and not snap.placements and not snap.states
    assert snap.revision == (await registry.snapshot()).revision
    await lease.revoke()


async def test_units_snapshot_reads_only_those_units(registry: Registry) -> None:
    await registry.create_job("a.service", unit("a"), JobState.LAUNCHED)
    await registry.create_job("b.service", unit("b"))
    lease = await registry.register_machine(Machine("m1", "10.0.0.1", {}), ttl=10)
    assert await registry.schedule("a.service", "m1")
    await registry.publish_state(state("a.service", "m1"), lease)
    snap = await registry.units_snapshot(["a.service", "ghost.service"])
    assert set(snap.jobs) == {"a.service"} and set(snap.units) == {unit("a").hash}
    assert dict(snap.placements) == {"a.service": "m1"}
    assert set(snap.states) == {("a.service", "m1")} and set(snap.machines) == {"m1"}
    assert snap.revision == (await registry.snapshot()).revision
    with pytest.raises(ValueError):
        await registry.units_snapshot([])
    await lease.revoke()


async def test_units_snapshot_of_many_units_is_one_revision(registry: Registry) -> None:
    """Hundreds of names take several transactions of reads, the later ones pinned to the
    first one's revision: while another writer changes the same units, the snapshot is what
    the whole registry was at that revision, restricted to those units."""
    names = [f"u{i}.service" for i in range(400)]  # ten transactions of reads
    created = await registry.create_many([(n, unit(n), JobState.LOADED) for n in names])
    assert set(created) == {Submitted.CREATED}
    lease = await registry.register_machine(Machine("m1", "10.0.0.1", {}), ttl=10)
    writing = True

    async def writer(k: int) -> None:
        i = k
        while writing:  # a stream of writes to the units being read
            name = names[i % len(names)]
            await registry.set_desired(name, JobState.LAUNCHED if i % 2 else JobState.LOADED)
            i += 4

    tasks = [asyncio.create_task(writer(k)) for k in range(4)]
    try:
        for _ in range(5):
            snap = await registry.units_snapshot([*names, "ghost.service"])
            whole = await registry.snapshot(snap.revision)
            assert dict(snap.jobs) == dict(whole.jobs)
            assert dict(snap.placements) == dict(whole.placements)
            assert set(snap.units) == {j.unit_hash for j in whole.jobs.values()}
            assert set(snap.machines) == {"m1"}
    finally:
        writing = False
        await asyncio.gather(*tasks)
    await lease.revoke()
