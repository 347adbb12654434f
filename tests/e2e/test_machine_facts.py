"""Machine facts on a real machine: a sandbox machine's fleetd measures its machine at start and
registers the facts (`fleet.*` metadata); units are placed by them with `MachineMetadata=`, and
`fleetctl why` explains a unit no machine's facts admit. Restarted inside a cgroup with a memory
limit, fleetd registers that limit as its memory. Driven with the real `fleetctl` and
`fleetd sandbox`; what the machine registered is read from the registry.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from fleetd.registry import Snapshot
from tests.facts.cgroups import empty_and_remove, join_argv, v1_dir
from tests.faults.harness import BIN, COMMAND_TIMEOUT, SLACK, Cluster, active_on, placed_on
from tests.waiting import until

pytestmark = pytest.mark.root

MACHINES = 1
METADATA = ("machine=m1",)
DEADLINE = 30.0  # seconds: a bound against hanging, not a speed goal


async def test_units_are_placed_by_the_machines_facts(cluster: Cluster) -> None:
    m1 = cluster.machine("m1")
    # what the machine registered: its configured metadata and its facts
    async with cluster.registry() as registry:
        metadata = (await registry.snapshot()).machines[m1.id].metadata
    facts = {k: v for k, v in metadata.items() if k.startswith("fleet.")}
    assert metadata == {"machine": "m1", **facts}
    assert 1 <= float(facts["fleet.cpus"]) <= len(os.sched_getaffinity(0))
    assert int(facts["fleet.memory"]) > 0 and facts["fleet.kernel"] == os.uname().release
    # one event of its log says what it measured (at its last start)
    lines = cluster.log_of("m1").splitlines()
    *_, measured = [json.loads(line) for line in lines if "fleetd.machine_measured" in line]
    assert (measured["machine"], measured["facts"], measured["unmeasured"]) == (m1.id, facts, [])
    # fleetctl shows them apart from the metadata
    listed = json.loads(cluster.fleetctl("m1", "list-machines", "-l", "--output", "json").stdout)
    assert listed == [{
        "machine": m1.id, "ip": "127.0.0.11", "metadata": "machine=m1",
        "facts": ",".join(f"{k}={facts[k]}" for k in sorted(facts)),
    }]  # fmt: skip

    fits = cluster.write_unit("fits.service", x_fleet="MachineMetadata=fleet.cpus>=1")
    huge = cluster.write_unit("huge.service", x_fleet="MachineMetadata=fleet.cpus>=100000")
    async with cluster.registry() as registry:
        cluster.fleetctl("m1", "start", "--no-block", fits, huge)

        def fits_runs(snapshot: Snapshot) -> bool:
            return placed_on(snapshot, fits) == m1.id and m1.id in active_on(snapshot, fits)

        snapshot = await until(registry, fits_runs, DEADLINE + SLACK)
        assert placed_on(snapshot, huge) is None  # the same plan left it without a machine
    why = cluster.fleetctl("m1", "why", huge).stdout
    assert f"Unit {huge} is not placed on any machine." in why
    assert "Reason: no machine matches MachineMetadata fleet.cpus>=100000" in why
    # the rule, and what the machine has
    assert (
        f"MachineMetadata fleet.cpus>=100000: 1 of 1 machine rejected "
        f"({m1.id[:8]}: fleet.cpus={facts['fleet.cpus']})"
    ) in why
    cluster.fleetctl("m1", "destroy", fits, huge)


@pytest.mark.root("cgroups")
async def test_the_memory_fact_follows_the_machines_memory_limit(cluster: Cluster) -> None:
    """fleetd restarted (`fleetd sandbox restart`) by a process in a memory cgroup of 512 MiB
    runs in it: it registers 512 MiB as its memory."""
    memory = v1_dir("memory")
    if memory is None:
        pytest.skip("needs a writable cgroup v1 memory hierarchy (this machine's layout)")
    m1 = cluster.machine("m1")
    limited = memory / f"fleetd-facts-e2e-{os.getpid()}"
    limited.mkdir()
    try:
        (limited / "memory.limit_in_bytes").write_text(str(512 << 20))
        restart = [str(BIN / "fleetd"), "sandbox", "restart", "--dir", str(cluster.dir), "m1"]
        done = await asyncio.to_thread(
            subprocess.run, join_argv([limited], restart),
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        async with cluster.registry() as registry:

            def registered_limit(snapshot: Snapshot) -> bool:
                machine = snapshot.machines.get(m1.id)
                return machine is not None and machine.metadata["fleet.memory"] == str(512 << 20)

            await until(registry, registered_limit, DEADLINE)
        pid = cluster.machine("m1").fleetd_pid
        assert str(pid) in (limited / "cgroup.procs").read_text().split()  # it runs there
    finally:
        empty_and_remove(limited)
