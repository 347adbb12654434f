"""The engine shell against a real etcd; machines are only leases and keys (no systemd)."""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from fleetd.engine import Engine
from fleetd.model import JobState, Machine, UnitState
from fleetd.registry import EtcdConfig, Registry
from fleetd.unit import parse_unit
from tests.running import cancelled, engine_running, running
from tests.waiting import until

M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
HELLO = parse_unit(
    "[Service]\nExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'\n"
)
APACHE = parse_unit(
    "[Unit]\nDescription=Fake Apache instance %i\n[Service]\nExecStart=/usr/bin/python3 -m http.server %i\n"
    "[X-Fleet]\nX-Conflicts=apache@*.service\n"
)


async def machine(registry: Registry, mid: str, ttl: int = 5, **metadata: str):
    return await registry.register_machine(
        Machine(mid, f"127.0.0.{int(mid[0]) + 10}", metadata), ttl
    )


def placements(snapshot) -> dict[str, str]:
    return dict(snapshot.placements)


async def test_places_seed_units_and_explains_the_fourth_apache(registry: Registry) -> None:
    for mid in (M1, M2, M3):
        await machine(registry, mid)
    for i in range(1, 5):
        await registry.create_job(f"apache@{i}.service", APACHE, JobState.LAUNCHED)
    engine = Engine(registry, M1, lease_ttl=5)
    async with running(engine.run()):
        snap = await until(registry, lambda s: len(s.placements) == 3)
        assert sorted(placements(snap).values()) == [M1, M2, M3]
        await until(registry, lambda s: True)
        unplaced = [
            n for n in (f"apache@{i}.service" for i in range(1, 5)) if n not in snap.placements
        ]
        assert len(unplaced) == 1
        await asyncio.wait_for(engine.wait_planned(lambda e: unplaced[0] in e.unplaced), 10)
        assert "conflicts with apache@" in engine.unplaced[unplaced[0]]


async def test_inactive_unschedules_and_destroy_clears(registry: Registry) -> None:
    await machine(registry, M1)
    await registry.create_job("hello.service", HELLO, JobState.LOADED)
    async with engine_running(registry, M1):
        await until(registry, lambda s: placements(s) == {"hello.service": M1})
        await registry.set_desired("hello.service", JobState.INACTIVE)
        await until(registry, lambda s: not s.placements)
        await registry.set_desired("hello.service", JobState.LAUNCHED)
        await until(registry, lambda s: placements(s) == {"hello.service": M1})
        await registry.destroy("hello.service")
        snap = await until(registry, lambda s: not s.jobs)
        assert not snap.placements


async def test_machine_lease_expiry_moves_its_units(registry: Registry) -> None:
    dying = await machine(registry, M1, ttl=1)
    await machine(registry, M2, ttl=30)
    await machine(registry, M3, ttl=30)
    await registry.create_job("a.service", HELLO, JobState.LAUNCHED)
    async with engine_running(registry, M2):
        snap = await until(registry, lambda s: "a.service" in s.placements)
        if snap.placements["a.service"] != M1:
            # put it on the machine that will die, as a user's MachineID would
            assert await registry.schedule("a.service", M1, snap.placements["a.service"])
            await until(registry, lambda s: s.placements["a.service"] == M1)
        await dying.release()  # the machine stops renewing: it dies at the lease's expiry
        down = await until(registry, lambda s: M1 not in s.machines)
        t_down = time.monotonic()
        moved = await until(
            registry,
            lambda s: s.placements.get("a.service") and s.placements["a.service"] != M1,
        )
        print(f"re-placed {time.monotonic() - t_down:.3f}s after the machine's lease expired")
        assert moved.placements["a.service"] in (M2, M3)
        assert down.revision < moved.revision


async def test_two_engines_one_leader_and_failover(etcd_config: EtcdConfig) -> None:
    async with (
        Registry(etcd_config) as r1,
        Registry(etcd_config) as r2,
        Registry(etcd_config) as obs,
    ):
        await machine(obs, M3, ttl=30)
        e1, e2 = Engine(r1, M1, lease_ttl=2), Engine(r2, M2, lease_ttl=2)
        async with running(e1.run()) as t1, running(e2.run()) as t2:
            await asyncio.wait_for(_first_leader(e1, e2), 10)
            assert e1.is_leader.is_set() != e2.is_leader.is_set()  # one leader, never two
            leader_info = await obs.leader()
            assert leader_info is not None
            # whichever won (a resign would let either win again): kill it the hard way, its
            # task dies without resigning or revoking its lease, and the other takes over
            leader, task, follower, other = (
                (e1, t1, e2, M2) if leader_info.machine_id == M1 else (e2, t2, e1, M1)
            )
            assert leader.is_leader.is_set()
            await cancelled(task)
            killed_at = time.monotonic()
            # pending work submitted meanwhile is done by the new leader
            await obs.create_job("pending.service", HELLO, JobState.LAUNCHED)
            await asyncio.wait_for(follower.is_leader.wait(), 10)
            print(f"new leader after {time.monotonic() - killed_at:.3f}s (lease ttl 2s)")
            await until(obs, lambda s: placements(s) == {"pending.service": M3})
            leader_info = await obs.leader()
            assert leader_info is not None and leader_info.machine_id == other


async def _first_leader(*engines: Engine) -> None:
    waits = [asyncio.ensure_future(e.is_leader.wait()) for e in engines]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def test_racing_engines_never_double_place(etcd_config: EtcdConfig) -> None:
    """Two engines that both act (one forced to think it leads) never place a job twice."""
    async with Registry(etcd_config) as r1, Registry(etcd_config) as r2:
        for mid in (M1, M2, M3):
            await machine(r1, mid)
        for i in range(20):
            await r1.create_job(f"u{i}.service", HELLO, JobState.LAUNCHED)
        from fleetd.reconcile.engine import plan_for

        snap = await r1.snapshot()
        plan_a, plan_b = plan_for(snap, {}), plan_for(snap, {})
        results = await asyncio.gather(
            *(r1.schedule(t.job, t.machine_id, None) for t in plan_a.tasks),
            *(r2.schedule(t.job, M3 if t.machine_id != M3 else M1, None) for t in plan_b.tasks),
        )
        assert sum(results) == 20  # each job placed exactly once
        final = await r1.snapshot()
        assert len(final.placements) == 20


@pytest.mark.parametrize("count", [200])
async def test_many_jobs_placed_in_few_plans(registry: Registry, count: int) -> None:
    for mid in (M1, M2, M3):
        await machine(registry, mid)
    from fleetd.metrics import METRICS

    def latencies() -> int:  # placement latencies observed so far (METRICS is process-wide)
        return METRICS.summaries.get("fleetd_placement_latency_seconds", (0.0, 0))[1]

    before = latencies()
    engine = Engine(registry, M1, lease_ttl=5)
    async with running(engine.run()):
        await asyncio.wait_for(engine.is_leader.wait(), 10)
        await asyncio.gather(
            *(registry.create_job(f"u{i}.service", HELLO, JobState.LAUNCHED) for i in range(count))
        )
        snap = await until(registry, lambda s: len(s.placements) == count)
        loads = sorted(list(placements(snap).values()).count(m) for m in (M1, M2, M3))
        assert loads[-1] - loads[0] <= 1  # least-loaded spreads evenly
        # the watch may show the last placements before the engine has read its txn's answer
        await asyncio.wait_for(engine.wait_planned(lambda e: latencies() - before >= count), 10)
        print(f"{count} jobs placed using {engine.plans} plans")
        rendered = "\n".join(METRICS.render())
        assert "fleetd_engine_plans_total" in rendered
        assert 'fleetd_engine_writes_total{action="schedule",outcome="won"}' in rendered
        assert latencies() - before == count  # each placement observed once


async def test_restarted_engine_resumes_its_leadership(registry: Registry, tmp_path) -> None:
    """A fleetd killed and restarted within the lease TTL leads again on the same lease at once,
    instead of waiting for its own old lease to expire (no scheduling pause)."""
    lease_file = tmp_path / "engine-lease"
    first = Engine(registry, M1, lease_ttl=30, lease_file=lease_file)
    async with running(first.run()):
        await asyncio.wait_for(first.is_leader.wait(), 10)
        lease_id = int(lease_file.read_text(), 16)
    # killed: cancelled above without resigning, its lease (30 s) still holds the leader key
    second = Engine(registry, M1, lease_ttl=30, lease_file=lease_file)
    async with running(second.run()):
        await asyncio.wait_for(second.is_leader.wait(), 10)  # far less than the 30 s TTL
        assert int(lease_file.read_text(), 16) == lease_id
        await registry.create_job("after.service", HELLO, JobState.LAUNCHED)
        await machine(registry, M2)
        await until(registry, lambda s: placements(s) == {"after.service": M2})


BIG = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nMemoryReservation=3G\n")
G = 1 << 30


async def test_an_over_committed_machine_is_logged_once_when_it_becomes_so_and_once_when_not(
    registry: Registry,
) -> None:
    facts = {"fleet.memory": str(4 * G), "fleet.cpus": "2"}
    lease = await machine(registry, M1, ttl=30, **facts)
    await registry.create_job("big.service", BIG, JobState.LAUNCHED)
    with capture_logs() as logs:
        async with engine_running(registry, M1) as engine:
            snap = await until(registry, lambda s: s.placements.get("big.service") == M1)
            # it runs there (as its agent would publish), then fleetd restarts with less memory
            # on the same lease: the unit is not moved for room, the machine is over-committed
            unit_hash = snap.jobs["big.service"].unit_hash
            await registry.publish_state(
                UnitState("big.service", M1, unit_hash, "loaded", "active", "running"), lease
            )
            await until(registry, lambda s: ("big.service", M1) in s.states)
            smaller = Machine(M1, "127.0.0.11", {**facts, "fleet.memory": str(2 * G)})
            await registry.register_machine(smaller, 30, lease.id)
            await asyncio.wait_for(engine.wait_planned(lambda e: M1 in e.overcommitted), 10)
            # other plans (a unit that reserves nothing) say nothing more of it
            await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
            await until(registry, lambda s: "hello.service" in s.placements)
            await registry.destroy("big.service")
            await asyncio.wait_for(engine.wait_planned(lambda e: not e.overcommitted), 10)
    told = [e for e in logs if e["event"].startswith("engine.machine_overcommit")]
    numbers = {"machine": M1, "memory_capacity": 2 * G, "cpus_reserved": 0.0,
               "cpus_capacity": 2.0, "overcommit_allowed": False}  # fmt: skip
    assert told == [
        {"event": "engine.machine_overcommitted", "log_level": "warning",
         "memory_reserved": 3 * G, **numbers},
        {"event": "engine.machine_overcommit_ended", "log_level": "info",
         "reason": "reserved within capacity", "memory_reserved": 0, **numbers},
    ]  # fmt: skip
    assert placements(await registry.snapshot()) == {"hello.service": M1}
