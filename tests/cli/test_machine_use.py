"""`fleetctl list-machines`: machines' capacity and use (fleetd's `x/machines`) in its resource
fields and, with `-l`, in CPU-USE and MEMORY-USE columns — only once some unit of the cluster
reserves, so a fleet cluster's output stays fleet's byte for byte.

The real fleetctl entry point against a real API server, registry, etcd and engine; fleet's
machines (tests/cli/conftest.py) registered with the facts their fleetd would measure (M1, M2;
M3 says nothing), units' states published by the agent stand-in.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetd.api.server import APIServer
from fleetd.model import Machine
from fleetd.registry import Lease, Registry
from tests.cli.conftest import M1, M2, M3, MACHINES, Cluster, agent_stand_in, fleetctl_env
from tests.cli.fleet_outputs import block
from tests.running import engine_running, running
from tests.waiting import until

G = 1 << 30
FACTS = {
    M1: {"fleet.memory": str(8 * G), "fleet.cpus": "4"},
    # 1G and half a CPU held back for the host: it offers 3G and 1.5 CPUs
    M2: {
        "fleet.memory": str(4 * G),
        "fleet.cpus": "2",
        "fleet.memory-reserved": str(G),
        "fleet.cpus-reserved": "0.5",
    },
    M3: {},
}
BIG = "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nMemoryReservation=2G\nCPUReservation=1.5\nMachineMetadata=role=db\n"
USE_FIELDS = "machine,cpus,cpus-reserved,cpus-free,memory,memory-reserved,memory-free,overcommitted"


class Measured(Cluster):
    server: APIServer
    leases: dict[str, Lease]

    def requests(self) -> int:
        """API requests answered so far."""
        return sum(self.server.metrics.requests.values())


@pytest.fixture
async def measured(registry: Registry, sock_dir: Path, workdir: Path) -> AsyncIterator[Measured]:
    leases = {
        mid: await registry.register_machine(Machine(mid, ip, {**meta, **FACTS[mid]}), 30)
        for mid, (ip, meta) in MACHINES.items()
    }
    (workdir / "big.service").write_text(BIG)
    server = APIServer(registry, M1)
    await server.start(sock_dir / "fleet.sock")
    try:
        async with engine_running(registry, M1), running(agent_stand_in(registry, leases)):
            cluster = Measured(f"unix://{sock_dir}/fleet.sock", registry, workdir, fleetctl_env())
            cluster.server, cluster.leases = server, leases
            yield cluster
    finally:
        await server.stop()
        for lease in leases.values():
            await lease.revoke()


def cells(out: str) -> list[list[str]]:
    return [[c for c in line.split("\t") if c] for line in out.splitlines()]


async def test_fleets_table_until_a_unit_reserves_then_the_use_columns(measured: Measured) -> None:
    run = measured.fleetctl
    # no unit reserves anything (a fleet 1.0 cluster, running hello.service): fleet's output
    rc, out, err = await run("start", "hello.service")
    assert rc == 0, err
    for args, capture in ((("--full",), "list-machines --full"), (("-l",), "list-machines --full"),
                          ((), "list-machines")):  # fmt: skip
        before = measured.requests()
        rc, out, err = await run("list-machines", *args)
        assert (rc, out, err) == (0, block("list-machines.txt", capture).output, ""), args
        # one request without -l (fleet's GET /machines), one more with it (x/machines)
        assert measured.requests() - before == (2 if args else 1), args
    rc, out, _ = await run("list-machines", "-l", "--output", "json")
    assert rc == 0 and set(json.loads(out)[0]) == {"machine", "ip", "metadata", "facts"}

    # a unit reserves 2G and 1.5 CPUs of M2 (role=db): -l adds the columns at the end
    rc, out, err = await run("start", "big.service")
    assert (rc, out.splitlines()[-1]) == (
        0,
        "Unit big.service launched on 929c22af.../127.0.0.12",
    ), err
    rc, out, err = await run("list-machines", "-l")
    assert (rc, err) == (0, "")
    assert out == (
        "MACHINE\t\t\t\t\tIP\t\tMETADATA\t\tCPU-USE\tMEMORY-USE\n"
        f"{M1}\t127.0.0.11\tmachine=m1,role=web\t0/4\t0/8G\n"
        f"{M3}\t127.0.0.13\tmachine=m3,role=misc\t-\t-\n"
        f"{M2}\t127.0.0.12\tmachine=m2,role=db\t1.5/1.5\t2G/3G\n"
    )
    # without -l: still fleet's table, and no request but fleet's
    before = measured.requests()
    rc, out, _ = await run("list-machines")
    assert out == block("list-machines.txt", "list-machines").output
    assert measured.requests() - before == 1
    # -l with fields of one's own: those fields only
    rc, out, _ = await run("list-machines", "-l", "--no-legend", "--fields", "machine,ip")
    assert cells(out) == [[M1, "127.0.0.11"], [M3, "127.0.0.13"], [M2, "127.0.0.12"]]


async def test_fields_and_json_numbers_and_an_over_committed_machine(measured: Measured) -> None:
    run = measured.fleetctl
    rc, out, err = await run("start", "big.service")
    assert rc == 0, err
    # the fields, human-readable in a table
    rc, out, err = await run("list-machines", "--fields", USE_FIELDS)
    assert (rc, err) == (0, "")
    assert cells(out) == [
        ["MACHINE", "CPUS", "CPUS-RESERVED", "CPUS-FREE", "MEMORY", "MEMORY-RESERVED",
         "MEMORY-FREE", "OVERCOMMITTED"],
        ["5ab7f3b4...", "4", "0", "4", "8G", "0", "8G", "false"],
        ["8197e13c...", "-", "0", "-", "-", "0", "-", "false"],
        ["929c22af...", "1.5", "1.5", "0", "3G", "2G", "1G", "false"],
    ]  # fmt: skip
    # numbers in json (bytes, CPUs; null when the machine does not say)
    rc, out, _ = await run("list-machines", "--full", "--output", "json", "--fields", USE_FIELDS)
    rows = {r.pop("machine"): r for r in json.loads(out)}
    assert rows == {
        M1: {"cpus": 4.0, "cpus-reserved": 0.0, "cpus-free": 4.0, "memory": 8 * G,
             "memory-reserved": 0, "memory-free": 8 * G, "overcommitted": False},
        M3: {"cpus": None, "cpus-reserved": 0.0, "cpus-free": None, "memory": None,
             "memory-reserved": 0, "memory-free": None, "overcommitted": False},
        M2: {"cpus": 1.5, "cpus-reserved": 1.5, "cpus-free": 0.0, "memory": 3 * G,
             "memory-reserved": 2 * G, "memory-free": G, "overcommitted": False},
    }  # fmt: skip
    # -l in json: fleet's fields, the facts, then the numbers
    rc, out, _ = await run("list-machines", "-l", "--output", "json")
    [first, *_] = json.loads(out)
    assert list(first) == ["machine", "ip", "metadata", "facts", "cpus", "cpus-reserved",
                           "cpus-free", "memory", "memory-reserved", "memory-free",
                           "overcommitted"]  # fmt: skip
    assert first["memory"] == 8 * G and first["facts"] == f"fleet.cpus=4,fleet.memory={8 * G}"

    # M2's fleetd restarts with less memory (2G, 1G held back): the unit running there is not
    # moved for room, M2 is over-committed
    await until(measured.registry, lambda s: ("big.service", M2) in s.states)
    ip, meta = MACHINES[M2]
    smaller = Machine(M2, ip, {**meta, **FACTS[M2], "fleet.memory": str(2 * G)})
    await measured.registry.register_machine(smaller, 30, measured.leases[M2].id)
    rc, out, _ = await run("list-machines", "-l", "--no-legend")
    assert cells(out)[-1] == [M2, "127.0.0.12", "machine=m2,role=db", "1.5/1.5", "2G/1G!"]
    rc, out, _ = await run("list-machines", "--output", "json", "--fields",
                           "memory,memory-free,overcommitted,memory-use")  # fmt: skip
    assert json.loads(out)[-1] == {
        "memory": G,
        "memory-free": 0,
        "overcommitted": True,
        "memory-use": "2G/1G!",
    }
    assert (await measured.registry.snapshot()).placements["big.service"] == M2
    # a field that does not exist: fleet's message, exit 1
    rc, out, err = await run("list-machines", "--fields", "machine,memory-used")
    assert (rc, out, err) == (1, "", 'Invalid key in output format: "memory-used"\n')
