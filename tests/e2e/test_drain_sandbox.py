"""`fleetctl drain` on real machines: a real sandbox (etcd and three namespaced systemd machines
each running fleetd), the real `fleetctl`, the agents' health gate.

The acceptance: five instances of a template with `DisruptionBudget=MinAvailable=4` all run on
m1 (MachineMetadata on a key only m1 has, then given to m2 and m3 so they may move); `fleetctl
drain m1` moves them one at a time, each judged healthy where it went, and over the whole
sequence of states the agents published — the registry's watch folded event by event from a
revision before the command, never sampled — at least four instances run. Afterwards m1 runs
only its Global unit and takes no new unit until `fleetctl uncordon`.
"""

from __future__ import annotations

import asyncio

import pytest

from fleetd.model import DrainState, Phase
from fleetd.registry import Changed, ClusterView, KeyKind, Registry
from tests.faults.harness import SLACK, Cluster, active_on, placed_on, report, start_units
from tests.waiting import until

pytestmark = pytest.mark.root

METADATA = ("machine=m1,pool=blue", "machine=m2", "machine=m3")
WEBS = [f"web@{i}.service" for i in range(1, 6)]
GLOBAL = "everywhere.service"
HEALTHY_TIME = 2  # seconds each moved instance must stay healthy (UpdateMinHealthyTime=)
DEADLINE = len(WEBS) * (HEALTHY_TIME + 15.0) + SLACK  # a bound against hanging


def running_webs(view: ClusterView) -> int:
    """Instances of web@ that some machine's agent reports active."""
    return sum(1 for name in WEBS if active_on(view, name))  # type: ignore[arg-type]


async def fold_until_drained(registry: Registry, machine_id: str, revision: int) -> list[int]:
    """The number of running instances after each event from `revision` on, folded from the
    watch, until the machine's cordon says DRAINED (its drain stopping fails the test, and so
    does any version of it moving more than one unit at once)."""
    view = ClusterView(await registry.snapshot(revision))
    counts = [running_webs(view)]
    async with registry.watch(revision + 1) as events:
        async for event in events:
            view.apply(event)
            counts.append(running_webs(view))
            if isinstance(event, Changed) and event.kind is KeyKind.CORDON:
                phases = [t.phase for t in event.doc.targets]
                assert Phase.FAILED not in phases, f"the drain stopped: {event.doc.reason}"
                assert phases.count(Phase.UPDATING) <= 1, event.doc
                if event.ident == machine_id and event.doc.state is DrainState.DRAINED:
                    return counts
    raise AssertionError("the watch ended")


async def test_drain_keeps_the_budget_and_leaves_only_global_units(cluster: Cluster) -> None:
    m1, m2, m3 = (cluster.machine(name) for name in ("m1", "m2", "m3"))
    cluster.write_unit(
        "web@.service",
        x_fleet=(
            "MachineMetadata=pool=blue\nDisruptionBudget=MinAvailable=4\n"
            f"UpdateMinHealthyTime={HEALTHY_TIME}s\nUpdateHealthyDeadline=30s"
        ),
    )
    cluster.write_unit(GLOBAL, x_fleet="Global=true")
    async with cluster.registry() as registry:
        await start_units(cluster, registry, WEBS)
        cluster.fleetctl("m1", "start", GLOBAL)
        await until(registry, lambda s: active_on(s, GLOBAL) == {m1.id, m2.id, m3.id}, SLACK)
        snapshot = await registry.snapshot()
        assert {placed_on(snapshot, n) for n in WEBS} == {m1.id}
        for machine in (m2, m3):  # now they may take the instances
            cluster.fleetctl("m1", "set-metadata", machine.id[:8], "pool=blue")

        revision = (await registry.snapshot()).revision
        folding = asyncio.create_task(fold_until_drained(registry, m1.id, revision))
        done = await asyncio.to_thread(cluster.fleetctl, "m2", "drain", m1.id[:8], check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        counts = await asyncio.wait_for(folding, DEADLINE)

        lines = done.stdout.splitlines()
        short = m1.id[:8]
        assert lines[-1] == f"Machine {short} drained: 5 units moved"
        assert f"drain of {short}: 5/5 moved, 0 in progress, 0 pending" in lines
        report("drain of 5 instances", f"{len(counts)} events folded, min running {min(counts)}")
        assert min(counts) >= 4, counts
        assert counts[0] == 5

        # m1 runs only its Global unit; nothing of web@ is placed or active there
        after = await until(
            registry,
            lambda s: (
                all(placed_on(s, n) in (m2.id, m3.id) and active_on(s, n) - {m1.id} for n in WEBS)
                and not any(m1.id in active_on(s, n) for n in WEBS)
            ),
            SLACK,
        )
        assert {n for n, m in after.placements.items() if m == m1.id} == set()
        assert m1.id in active_on(after, GLOBAL)
        for name in WEBS:
            assert cluster.unit_process("m1", name).active != "active"

        # no new unit there (m1 is the least loaded) until uncordoned
        cluster.write_unit("late.service")
        cluster.fleetctl("m1", "start", "--no-block", "late.service")
        placed = await until(registry, lambda s: placed_on(s, "late.service") is not None, SLACK)
        assert placed_on(placed, "late.service") != m1.id
        listed = cluster.fleetctl(
            "m1", "list-machines", "-l", "--no-legend", "--fields", "machine,ip,metadata,state"
        ).stdout
        assert any(
            line.startswith(m1.id) and line.endswith("drained") for line in listed.splitlines()
        )

        assert cluster.fleetctl("m1", "uncordon", short).stdout.startswith("Uncordoned machine")
        cluster.write_unit("later.service")
        cluster.fleetctl("m1", "start", "--no-block", "later.service")
        placed = await until(registry, lambda s: placed_on(s, "later.service") is not None, SLACK)
        assert placed_on(placed, "later.service") == m1.id
