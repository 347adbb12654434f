"""The placement rules beyond fleet 1.0 on real machines: a real sandbox of four namespaced
systemd machines (each running fleetd) with metadata given at `sandbox up`, driven by the real
`fleetctl`. Where units run is read from the registry (placements, and the states the agents
publish once systemd runs them); each test destroys what it started.

Machines: m1 eu/4 cores/rack a/web1, m2 us/8/b/web2, m3 us/16/c/db1, m4 ap/"many"/c/web3.
"""

from __future__ import annotations

from collections import Counter

import pytest

from fleetd.registry import Registry, Snapshot
from tests.faults.harness import SLACK, Cluster, placed_and_running, placed_on
from tests.waiting import until

pytestmark = pytest.mark.root

MACHINES = 4
METADATA = (
    "machine=m1,region=eu,cores=4,rack=a,host=web1",
    "machine=m2,region=us,cores=8,rack=b,host=web2",
    "machine=m3,region=us,cores=16,rack=c,host=db1",
    "machine=m4,region=ap,cores=many,rack=c,host=web3",
)
DEADLINE = 30.0  # seconds: a bound against hanging, not a speed goal


def names_of(cluster: Cluster, machine_ids: set[str | None]) -> set[str]:
    return {cluster.by_id(m).name for m in machine_ids if m is not None}


async def start_template(
    cluster: Cluster, registry: Registry, template: str, x_fleet: str, count: int, placed: int
) -> tuple[list[str], Snapshot]:
    """Write `template` with `x_fleet`, start `count` instances without waiting (some may
    never be placed), and wait until `placed` of them run."""
    cluster.write_unit(template, x_fleet=x_fleet)
    prefix = template.removesuffix("@.service")
    names = [f"{prefix}@{i}.service" for i in range(1, count + 1)]
    cluster.fleetctl("m2", "start", "--no-block", *names)
    snapshot = await until(registry, placed_and_running(names, placed), DEADLINE + SLACK)
    return names, snapshot


def destroy(cluster: Cluster, names: list[str]) -> None:
    cluster.fleetctl("m2", "destroy", *names)


@pytest.mark.parametrize(
    ("template", "rule", "count", "where"),
    [
        ("noteu@.service", "MachineMetadata=region!=eu", 4, {"m2", "m3", "m4"}),
        ("big@.service", "MachineMetadata=cores>=8", 3, {"m2", "m3"}),
        ("webhost@.service", "MachineMetadata=host=~web[0-9]+", 4, {"m1", "m2", "m4"}),
    ],
    ids=["not-equal", "at-least", "regex"],
)
async def test_metadata_operators_choose_the_machines(
    cluster: Cluster, template: str, rule: str, count: int, where: set[str]
) -> None:
    """One instance per machine (Conflicts): exactly the machines the clause admits run one,
    the instances left over have nowhere to go."""
    async with cluster.registry() as registry:
        x_fleet = f"{rule}\nConflicts={template.replace('@.', '@*.')}"
        names, snapshot = await start_template(
            cluster, registry, template, x_fleet, count, len(where)
        )
        assert names_of(cluster, {placed_on(snapshot, n) for n in names}) == where
        destroy(cluster, names)


async def test_a_comparison_with_a_word_is_refused_at_submit_and_nothing_is_written(
    cluster: Cluster,
) -> None:
    cluster.write_unit("badcores.service", x_fleet="MachineMetadata=cores>=abc")
    async with cluster.registry() as registry:
        contents = set((await registry.snapshot()).units)
        for command in ("submit", "load", "start"):
            done = cluster.fleetctl("m1", command, "badcores.service", check=False)
            assert done.returncode == 1, (command, done.stdout, done.stderr)
            assert "MachineMetadata cores>=abc: 'abc' is not a number" in done.stderr
            assert done.stdout == ""
        after = await registry.snapshot()
        assert "badcores.service" not in after.jobs
        assert set(after.units) == contents  # no unit content written either
    assert "badcores" not in cluster.fleetctl("m1", "list-unit-files").stdout


async def test_max_per_machine_places_eight_of_ten_on_four_machines(cluster: Cluster) -> None:
    async with cluster.registry() as registry:
        names, snapshot = await start_template(
            cluster, registry, "capped@.service", "MaxPerMachine=2", 10, 8
        )
        per_machine = Counter(placed_on(snapshot, n) for n in names)
        pending = [n for n in names if placed_on(snapshot, n) is None]
        assert per_machine.pop(None) == 2
        assert sorted(per_machine.values()) == [2, 2, 2, 2]
        assert len(pending) == 2
        # why they wait: `fleetctl why` names the rule and counts the machines it refused
        why = cluster.fleetctl("m3", "why", pending[0]).stdout
        assert f"Unit {pending[0]} is not placed on any machine." in why
        assert "Reason: MaxPerMachine=2: 2 of capped@*.service there already" in why
        assert "MaxPerMachine=2 capped@*.service: 4 of 4 machines rejected" in why
        # and list-unit-files -l shows the short reason in its REASON column
        listed = cluster.fleetctl("m3", "list-unit-files", "-l").stdout.splitlines()
        assert listed[0].split("\t")[-1] == "REASON"
        rows = {line.split("\t")[0]: line.split("\t") for line in listed[1:]}
        for name in pending:
            assert rows[name][-1].startswith("MaxPerMachine=2: 2 of capped@*.service there")
        for name in set(names) - set(pending):
            assert rows[name][-1] == "-"
        # a waiting unit can be taken back: unloaded, it waits no more
        done = cluster.fleetctl("m3", "unload", pending[0])
        assert done.stderr == f"Successfully unloaded units [{pending[0]}].\n"
        assert (await registry.snapshot()).jobs[pending[0]].desired.value == "inactive"
        destroy(cluster, names)


async def test_spread_evens_out_racks_and_again_after_a_rack_dies(cluster: Cluster) -> None:
    """Six instances over racks a (m1), b (m2), c (m3, m4): two per rack. Then rack a's only
    machine dies: its two move, and racks b and c end up differing by at most one."""
    async with cluster.registry() as registry:
        names, snapshot = await start_template(
            cluster, registry, "spread@.service", "Spread=rack", 6, 6
        )
        rack = {r.id: r.metadata["rack"] for r in cluster.state.machines}
        assert Counter(rack[placed_on(snapshot, n)] for n in names) == {"a": 2, "b": 2, "c": 2}

        m1 = cluster.machine("m1")
        await cluster.sandbox.kill("m1")

        def survivors_run_all(snapshot: Snapshot) -> bool:
            return placed_and_running(names, 6)(snapshot) and all(
                placed_on(snapshot, n) != m1.id for n in names
            )

        snapshot = await until(registry, survivors_run_all, cluster.agent_ttl + DEADLINE + SLACK)
        per_rack = Counter(rack[placed_on(snapshot, n)] for n in names)
        assert set(per_rack) == {"b", "c"}
        assert abs(per_rack["b"] - per_rack["c"]) <= 1
        destroy(cluster, names)
