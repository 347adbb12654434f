"""Machines die, leave, lose their engine leader; a unit fails: the cluster heals, from events.

Real 3-machine sandbox with agent_ttl 3 s. Every figure is measured from the fault to the first
registry view showing the healed state, printed, and only bounded by a generous deadline.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest

from fleetd.registry import KeyKind, Registry, Snapshot
from tests.faults.harness import (
    SLACK,
    Cluster,
    active_on,
    first_event,
    local_units,
    placed_on,
    report,
    running_elsewhere,
    signal_and_wait,
    start_units,
)
from tests.waiting import put, until

pytestmark = pytest.mark.root

AGENT_TTL = 3.0  # the sandbox of `cluster` runs with it (tests/faults/harness.py)
FAILOVER_DEADLINE = AGENT_TTL + SLACK


async def _unit_on(cluster: Cluster, registry: Registry, prefix: str, machine_id: str) -> str:
    """Start units (unpinned, so they can move) until one runs on `machine_id`: the scheduler
    places each on the least-loaded machine, so this ends within a few units."""
    for i in range(1, 3 * len(cluster.state.machines) + 2):
        name = cluster.write_unit(f"{prefix}-{i}.service")
        snapshot = await start_units(cluster, registry, [name], via=_alive_except(cluster, ""))
        if placed_on(snapshot, name) == machine_id:
            return name
    raise AssertionError(f"no unit was placed on {machine_id}")


def _alive_except(cluster: Cluster, name: str) -> str:
    return next(r.name for r in cluster.state.machines if r.name != name and r.fleetd_pid)


async def _failover(cluster: Cluster, registry: Registry, victim: str, unit: str) -> float:
    """Kill the machine (`fleetd sandbox kill`): seconds until `unit` runs on another one."""
    record = cluster.by_id(victim)
    started = time.monotonic()
    await cluster.sandbox.kill(record.name)
    await until(registry, running_elsewhere(unit, victim), FAILOVER_DEADLINE)
    return time.monotonic() - started


async def _comes_back_without(
    cluster: Cluster, registry: Registry, name: str, moved: set[str]
) -> None:
    """Start the killed machine again: once a unit pinned to it runs, its agent has planned,
    and it runs none of the units that were moved away."""
    record = cluster.machine(name)
    cluster.sandbox_command("start", name)
    probe = cluster.write_unit(f"back-{name}.service", x_fleet=f"MachineID={record.id}")
    snapshot = await start_units(cluster, registry, [probe], via=name)
    for unit in moved:
        assert placed_on(snapshot, unit) != record.id
        assert (unit, record.id) not in snapshot.states
        assert cluster.unit_process(name, unit).active in ("inactive", ""), unit
    cluster.fleetctl(name, "destroy", probe)


async def test_machine_dies_units_run_elsewhere_and_it_comes_back_empty(cluster: Cluster) -> None:
    async with cluster.registry() as registry:
        leader = await registry.leader()
        assert leader is not None
        victim = next(r.id for r in cluster.state.machines if r.id != leader.machine_id)
        unit = await _unit_on(cluster, registry, "dies", victim)
        moved = local_units(await registry.snapshot(), victim)
        took = await _failover(cluster, registry, victim, unit)
        await _comes_back_without(cluster, registry, cluster.by_id(victim).name, moved)
    report("machine killed (not the leader)", f"{unit} active elsewhere {took:.2f}s after the kill")


async def test_leader_machine_dies_units_run_elsewhere(cluster: Cluster) -> None:
    async with cluster.registry() as registry:
        leader = await registry.leader()
        assert leader is not None
        victim = leader.machine_id
        unit = await _unit_on(cluster, registry, "leaderdies", victim)
        moved = local_units(await registry.snapshot(), victim)
        took = await _failover(cluster, registry, victim, unit)
        new_leader = await registry.leader()
        assert new_leader is not None and new_leader.machine_id != victim
        await _comes_back_without(cluster, registry, cluster.by_id(victim).name, moved)
    report("machine killed (engine leader)", f"{unit} active elsewhere {took:.2f}s after the kill")


async def test_leave_moves_units_and_machine_is_gone(cluster: Cluster) -> None:
    async with cluster.registry() as registry:
        leader = await registry.leader()
        assert leader is not None
        victim = next(r.id for r in cluster.state.machines if r.id != leader.machine_id)
        record = cluster.by_id(victim)
        unit = await _unit_on(cluster, registry, "leave", victim)
        started = time.monotonic()
        left = cluster.run_in(record.name, "fleetd", "leave")
        assert left.returncode == 0, left.stderr
        await until(registry, running_elsewhere(unit, victim), FAILOVER_DEADLINE)
        took = time.monotonic() - started
        await asyncio.to_thread(signal_and_wait, record.fleetd_pid, None, SLACK)
        machines = cluster.fleetctl(_alive_except(cluster, record.name), "list-machines", "-l")
        assert record.id not in machines.stdout
        assert len(machines.stdout.splitlines()) == 1 + 2
        assert cluster.unit_process(record.name, unit).active in ("inactive", "")
        cluster.sandbox_command("restart", record.name)  # join again for the next tests
    report("fleetd leave", f"{unit} active elsewhere {took:.2f}s after `fleetd leave`")


async def test_leader_fleetd_killed_new_leader_and_work_submitted_meanwhile_is_done(
    cluster: Cluster,
) -> None:
    async with cluster.registry() as registry:
        snapshot = await registry.snapshot()
        assert snapshot.leader is not None
        old = cluster.by_id(snapshot.leader.machine_id)
        via = _alive_except(cluster, old.name)
        unit = cluster.write_unit("during-election.service")
        started = time.monotonic()
        signal_and_wait(old.fleetd_pid, signal.SIGKILL)
        # work submitted while there is no leader: fleetctl blocks until it is launched
        submitted: dict[str, object] = {}
        worker = threading.Thread(
            target=lambda: submitted.update(done=cluster.fleetctl(via, "start", unit, check=False))
        )
        worker.start()

        def new_leader(event: object) -> bool:
            return put(KeyKind.LEADER)(event) and event.doc.machine_id != old.id  # type: ignore[attr-defined]

        elected = await first_event(registry, snapshot.revision + 1, new_leader, 3 + SLACK)
        elected_s = time.monotonic() - started
        assert elected is not None, "no new engine leader"

        def runs(view: Snapshot) -> bool:
            return placed_on(view, unit) in active_on(view, unit)

        await until(registry, runs, FAILOVER_DEADLINE)
        done_s = time.monotonic() - started
        await asyncio.to_thread(worker.join, 60)
        result = submitted["done"]
        assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
        cluster.sandbox_command("restart", old.name)
    report(
        "engine leader's fleetd kill -9",
        f"new leader after {elected_s:.2f}s (engine lease TTL 3s); unit submitted meanwhile "
        f"active after {done_s:.2f}s",
    )


async def test_failing_unit_is_failed_and_not_rescheduled(cluster: Cluster) -> None:
    text = "[Unit]\nDescription=fails\n\n[Service]\nExecStart=/bin/false\n"
    unit = cluster.write_unit("fails.service", text)
    async with cluster.registry() as registry:
        revision = (await registry.snapshot()).revision
        cluster.fleetctl("m1", "start", "--no-block", unit)

        def failed(view: Snapshot) -> bool:
            where = placed_on(view, unit)
            state = view.states.get((unit, where)) if where else None
            return state is not None and state.active == "failed"

        view = await until(registry, failed, AGENT_TTL + SLACK)
        where = placed_on(view, unit)
        listed = cluster.fleetctl("m1", "list-units", "--no-legend")
        line = next(li for li in listed.stdout.splitlines() if li.startswith(unit))
        assert "\tfailed\t" in line, line
        # no reschedule loop: watch for any placement change of it for a few seconds
        window = 2 * AGENT_TTL

        def moved(event: object) -> bool:
            return put(KeyKind.SCHEDULE, unit)(event) and event.doc.machine_id != where  # type: ignore[attr-defined]

        assert await first_event(registry, view.revision + 1, moved, window) is None
        placements = [
            e
            for e in await _events(registry, revision + 1, view.revision)
            if put(KeyKind.SCHEDULE, unit)(e)
        ]
        assert len(placements) == 1
        cluster.fleetctl("m1", "destroy", unit)
    report("ExecStart=/bin/false", f"state failed, 1 placement, 0 reschedules over {window:.0f}s")


async def _events(registry: Registry, from_revision: int, to_revision: int) -> list[object]:
    """The events of revisions from_revision..to_revision (both already happened)."""
    if to_revision < from_revision:
        return []
    seen: list[object] = []

    def last(event: object) -> bool:
        seen.append(event)
        return getattr(event, "revision", 0) >= to_revision

    await first_event(registry, from_revision, last, SLACK)
    return seen
