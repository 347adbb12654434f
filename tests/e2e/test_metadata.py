"""`fleetctl set-metadata` / `unset-metadata` on real machines: a real sandbox (etcd and three
namespaced systemd machines each running fleetd), the real `fleetctl`. Agents and the engine
react to the metadata as the registry's watch delivers it: a Global unit starts and stops on
the machine whose metadata changed, a placed unit moves, and what was set outlives a restart
of the machine's fleetd.

What a unit does is read from the agents' published states (the registry's watch, from a
revision before the command) and from `systemctl show` inside the machine. How long each
reaction took is printed (`pytest -s`: FIGURE lines), never asserted: the deadlines only
bound a hang.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable

import pytest

from fleetd.registry import Changed, Event, KeyKind, Registry, Removed, Snapshot
from tests.faults.harness import (
    SLACK,
    Cluster,
    active_on,
    collect_until,
    placed_on,
    report,
    running_elsewhere,
)
from tests.waiting import until

pytestmark = pytest.mark.root

# m1 role=web, m2 role=db, m3 no role at all
METADATA = ("machine=m1,role=web", "machine=m2,role=db", "machine=m3")
GLOBAL_WEB = "web-everywhere.service"
GLOBAL_PROBE = "probe-everywhere.service"
PLACED_DB = "db.service"
DEADLINE = 10.0  # seconds: a bound against hanging (the acceptance asks for about 2 s)


def state_of(unit: str, machine_id: str, active: bool) -> Callable[[Event], bool]:
    """The machine's agent published the unit active (`active`), or not running any more:
    its state stopped or removed (the agent unloaded it)."""

    def check(event: Event) -> bool:
        if isinstance(event, Removed):
            return not active and event.kind is KeyKind.STATE and event.ident == (unit, machine_id)
        if not (isinstance(event, Changed) and event.kind is KeyKind.STATE):
            return False
        if event.ident != (unit, machine_id):
            return False
        return (event.doc.active == "active") == active and event.doc.active not in (
            "activating",
            "deactivating",
        )

    return check


async def react(
    cluster: Cluster, registry: Registry, args: list[str], done: Callable[[Event], bool]
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run `fleetctl ARGS` against m1 and wait (watch from before it) for the event `done`:
    (the command, seconds it took, seconds from its start to the event)."""
    revision = (await registry.snapshot()).revision
    seen: list[float] = []

    def timed(event: Event) -> bool:
        if done(event):
            seen.append(time.monotonic())
            return True
        return False

    start = time.monotonic()
    waiter = asyncio.create_task(collect_until(registry, revision + 1, timed, DEADLINE))
    try:
        command = await asyncio.to_thread(cluster.fleetctl, "m1", *args)
        took = time.monotonic() - start
        await waiter
    finally:
        waiter.cancel()
    return command, took, seen[0] - start


def metadata_listed(cluster: Cluster) -> dict[str, str]:
    """`list-machines`' METADATA column, by full machine ID."""
    out = cluster.fleetctl("m1", "list-machines", "--full", "--no-legend").stdout
    rows = [[cell for cell in line.split("\t") if cell] for line in out.splitlines()]
    return {row[0]: row[2] for row in rows}


def only_on(unit: str, machine_ids: set[str]) -> Callable[[Snapshot], bool]:
    return lambda snapshot: active_on(snapshot, unit) == machine_ids


async def test_a_global_unit_follows_the_metadata_set_and_unset(cluster: Cluster) -> None:
    m1, m2, m3 = (cluster.machine(name) for name in ("m1", "m2", "m3"))
    cluster.write_unit(GLOBAL_WEB, x_fleet="Global=true\nMachineMetadata=role=web")
    cluster.write_unit(GLOBAL_PROBE, x_fleet="Global=true")
    async with cluster.registry() as registry:
        cluster.fleetctl("m1", "start", GLOBAL_WEB)
        cluster.fleetctl("m1", "start", GLOBAL_PROBE)  # written after GLOBAL_WEB
        everywhere = {m1.id, m2.id, m3.id}
        await until(registry, only_on(GLOBAL_PROBE, everywhere), SLACK + DEADLINE)
        # so every agent has planned with GLOBAL_WEB known: only m1 (role=web) runs it
        await until(registry, only_on(GLOBAL_WEB, {m1.id}), SLACK + DEADLINE)
        assert cluster.unit_process("m3", GLOBAL_WEB).active != "active"

        # role=web on m3: its agent starts the unit
        done, took, reacted = await react(
            cluster, registry, ["set-metadata", m3.id[:6], "role=web"],
            state_of(GLOBAL_WEB, m3.id, active=True),
        )  # fmt: skip
        assert done.stdout == f"Set metadata of {m3.id[:8]}: role=web\n"
        report("set-metadata starts a Global unit", f"command {took:.2f}s, active {reacted:.2f}s")
        assert cluster.unit_process("m3", GLOBAL_WEB).active == "active"
        assert metadata_listed(cluster)[m3.id] == "machine=m3,role=web"

        # the metadata outlives a restart of m3's fleetd: listed, and the unit never stopped
        before = cluster.unit_process("m3", GLOBAL_WEB)
        cluster.sandbox_command("restart", "m3")
        assert metadata_listed(cluster)[m3.id] == "machine=m3,role=web"
        # a change the restarted agent must act on: once done, it has planned with the
        # metadata it read from etcd at start
        cluster.write_unit("probe-2.service", x_fleet="Global=true\nMachineMetadata=machine=m3")
        cluster.fleetctl("m1", "start", "probe-2.service")
        await until(registry, only_on("probe-2.service", {m3.id}), SLACK + DEADLINE)
        assert cluster.unit_process("m3", GLOBAL_WEB) == before  # same process, same invocation

        # role unset on m3: its agent stops the unit (m1 keeps it)
        done, took, reacted = await react(
            cluster, registry, ["unset-metadata", m3.id, "role"],
            state_of(GLOBAL_WEB, m3.id, active=False),
        )  # fmt: skip
        assert done.stdout == f"Unset metadata of {m3.id[:8]}: role\n"
        report("unset-metadata stops a Global unit", f"command {took:.2f}s, gone {reacted:.2f}s")
        assert cluster.unit_process("m3", GLOBAL_WEB).active != "active"
        assert cluster.unit_process("m1", GLOBAL_WEB).active == "active"
        assert metadata_listed(cluster)[m3.id] == "machine=m3"
        cluster.fleetctl("m1", "destroy", GLOBAL_WEB, GLOBAL_PROBE, "probe-2.service")


async def test_a_placed_unit_moves_off_a_machine_whose_role_is_unset(cluster: Cluster) -> None:
    m2, m3 = cluster.machine("m2"), cluster.machine("m3")
    cluster.write_unit(PLACED_DB, x_fleet="MachineMetadata=role=db")
    async with cluster.registry() as registry:
        # m3 gets role=db too: the unit may land on m2 or m3
        cluster.fleetctl("m1", "set-metadata", m3.id, "role=db")
        await until(registry, lambda s: s.dynamic_metadata.get(m3.id, {}).get("role") == "db")
        cluster.fleetctl("m1", "start", PLACED_DB)
        snapshot = await until(
            registry, lambda s: placed_on(s, PLACED_DB) in active_on(s, PLACED_DB), SLACK + DEADLINE
        )  # fmt: skip
        first = cluster.by_id(placed_on(snapshot, PLACED_DB) or "")
        other = m2 if first.id == m3.id else m3
        # its role unset (a configured role on m2 is hidden as well): the unit moves
        done, took, reacted = await react(
            cluster, registry, ["unset-metadata", first.id[:8], "role"],
            state_of(PLACED_DB, other.id, active=True),
        )  # fmt: skip
        assert done.stdout == f"Unset metadata of {first.id[:8]}: role\n"
        report(
            "unset-metadata moves a placed unit",
            f"from {first.name} to {other.name}: command {took:.2f}s, active there {reacted:.2f}s",
        )
        await until(registry, running_elsewhere(PLACED_DB, first.id), SLACK + DEADLINE)
        await until(registry, lambda s: (PLACED_DB, first.id) not in s.states, SLACK + DEADLINE)
        assert cluster.unit_process(first.name, PLACED_DB).active != "active"
        assert cluster.unit_process(other.name, PLACED_DB).active == "active"
