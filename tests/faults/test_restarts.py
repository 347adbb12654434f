"""fleetd restarts on a live machine never restart its units and never move them.

Real 3-machine sandbox. agent_ttl is 10 s here, not 3 s: "restart within agent_ttl" needs the
new fleetd to re-attach while the old lease still has time left, and a lease renewed every ttl/3
may have only 2/3·ttl left when fleetd dies; a Python fleetd takes 1-3 s to start on a loaded
2-core host, and etcd reports the remaining TTL truncated to whole seconds. With 3 s the
scenario would test the race, not the rule (docs/reliability.md).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import pytest

from fleetd.registry import KeyKind, Registry
from fleetd.sandbox.machine import pid_alive
from tests.faults.harness import (
    SLACK,
    Cluster,
    UnitProcess,
    collect_until,
    local_units,
    machine_lease,
    moves_of,
    placed_on,
    report,
    signal_and_wait,
    start_units,
    state_is,
)
from tests.waiting import gone

pytestmark = pytest.mark.root

AGENT_TTL = 10.0  # the sandbox of `cluster` runs with it (tests/faults/harness.py)


@dataclass(frozen=True)
class Victim:
    """The machine whose fleetd a test stops or restarts, and what must come through unchanged."""

    id: str
    name: str
    units: set[str]
    processes: dict[str, UnitProcess]  # each unit's systemd invocation before the fault
    lease: int
    revision: int  # the registry's, before the fault

    def processes_now(self, cluster: Cluster) -> dict[str, UnitProcess]:
        return {u: cluster.unit_process(self.name, u) for u in sorted(self.units)}


async def _victim_with_units(cluster: Cluster, registry: Registry, prefix: str) -> Victim:
    """Start two units; the machine of the first one is the victim."""
    names = [cluster.write_unit(f"{prefix}-{i}.service") for i in (1, 2)]
    snapshot = await start_units(cluster, registry, names)
    victim = placed_on(snapshot, names[0])
    assert victim is not None
    name = cluster.by_id(victim).name
    units = local_units(snapshot, victim)
    processes = {u: cluster.unit_process(name, u) for u in sorted(units)}
    assert all(p.active == "active" and p.main_pid for p in processes.values()), processes
    lease = await machine_lease(registry, victim)
    return Victim(victim, name, units, processes, lease, (await registry.snapshot()).revision)


async def _prove_nothing_moved(
    cluster: Cluster, registry: Registry, victim: Victim, probe: str
) -> float:
    """Start a unit pinned to the victim through its fresh API: once it runs there, the restarted
    agent has planned the whole view at least once. Up to that point no placement of the
    victim's units changed, the machine never went down, its lease is the one from before, and
    systemd still runs the very same invocations. Returns the probe's start-to-active time."""
    cluster.write_unit(probe, x_fleet=f"MachineID={victim.id}")
    started = time.monotonic()
    cluster.fleetctl(victim.name, "start", "--no-block", probe)
    events = await collect_until(
        registry, victim.revision + 1, state_is(probe, victim.id, "active"), AGENT_TTL + SLACK
    )
    probe_s = time.monotonic() - started
    assert moves_of(events, victim.units) == []
    assert not [e for e in events if gone(KeyKind.MACHINE, victim.id)(e)]
    lease = await machine_lease(registry, victim.id)
    assert lease == victim.lease, "fleetd did not re-attach its lease"
    assert victim.processes_now(cluster) == victim.processes, "a unit was restarted"
    cluster.fleetctl(victim.name, "destroy", probe)
    return probe_s


async def test_kill9_fleetd_units_keep_running_and_restart_restarts_nothing(
    cluster: Cluster,
) -> None:
    async with cluster.registry() as registry:
        victim = await _victim_with_units(cluster, registry, "kill9")

        down_at = time.monotonic()
        signal_and_wait(cluster.machine(victim.name).fleetd_pid, signal.SIGKILL)
        # fleetd is gone; systemd owns the units and keeps them as they were
        assert victim.processes_now(cluster) == victim.processes

        cluster.sandbox_command("restart", victim.name)  # starts the dead machine's fleetd again
        down_s = time.monotonic() - down_at
        probe_s = await _prove_nothing_moved(cluster, registry, victim, "kill9-probe.service")
    report(
        "kill -9 fleetd, start again",
        f"fleetd down {down_s:.2f}s (kill -> restarted fleetd registered), "
        f"{len(victim.units)} units kept their MainPID/InvocationID, 0 placement changes; "
        f"pinned probe active after {probe_s:.2f}s",
    )


async def test_sandbox_restart_within_ttl_restarts_and_moves_nothing(cluster: Cluster) -> None:
    async with cluster.registry() as registry:
        victim = await _victim_with_units(cluster, registry, "restart")
        started = time.monotonic()
        cluster.sandbox_command("restart", victim.name)  # SIGTERM, wait for exit, start, join
        restart_s = time.monotonic() - started
        probe_s = await _prove_nothing_moved(cluster, registry, victim, "restart-probe.service")
    report(
        "fleetd sandbox restart",
        f"restart took {restart_s:.2f}s, 0 unit restarts, 0 placement changes; pinned probe "
        f"active after {probe_s:.2f}s",
    )


async def test_sigterm_stops_fleetd_and_keeps_units(cluster: Cluster) -> None:
    async with cluster.registry() as registry:
        victim = await _victim_with_units(cluster, registry, "sigterm")
        exit_s = signal_and_wait(cluster.machine(victim.name).fleetd_pid, signal.SIGTERM)
        log = cluster.log_of(victim.name)
        tail = log[log.rindex('"fleetd.stopping"') :]
        assert '"fleetd.stopped"' in tail
        assert '"agent.stop"' not in tail and '"systemd.unit_stopped"' not in tail
        # DESIGN: a graceful stop keeps the units (fleet 1.0 stopped every one of them)
        assert victim.processes_now(cluster) == victim.processes
        cluster.sandbox_command("restart", victim.name)
        await _prove_nothing_moved(cluster, registry, victim, "sigterm-probe.service")
    report(
        "SIGTERM fleetd",
        f"exited {exit_s:.2f}s after SIGTERM; {len(victim.units)} units kept running",
    )


def test_sighup_reloads_configuration_and_api_keeps_answering(cluster: Cluster) -> None:
    record = cluster.machine("m2")
    before = cluster.log_of("m2").count('"fleetd.reloading_configuration"')
    os.kill(record.fleetd_pid, signal.SIGHUP)
    started = time.monotonic()
    listed = cluster.fleetctl("m2", "list-machines", "--no-legend")
    answer_s = time.monotonic() - started
    assert len(listed.stdout.splitlines()) == 3, listed.stdout
    # the handler runs on the loop before fleetctl (a new process) has even connected
    log = cluster.log_of("m2")
    assert log.count('"fleetd.reloading_configuration"') == before + 1
    assert '"fleetd.configuration_reloaded"' in log
    assert cluster.machine("m2").fleetd_pid == record.fleetd_pid
    assert pid_alive(record.fleetd_pid)
    report("SIGHUP fleetd", f"list-machines answered {answer_s:.2f}s after SIGHUP")
