"""`GET x/machines` (each machine's capacity and what its units reserve) and this machine's
gauges in `/metrics`: a real APIServer on a unix socket over the session etcd, machines as
leases with the facts their fleetd would register."""

from __future__ import annotations

import asyncio
import json

from api_helpers import HELLO, machine, publish, raw
from conftest import MACHINE

from fleetd.api.client import Client
from fleetd.api.server import APIServer
from fleetd.model import Machine
from fleetd.registry import Registry

OTHER = "b" * 32
G = 1 << 30


def reserving(memory: str = "", cpus: str = "", xfleet: str = "") -> list[dict[str, str]]:
    options = [{"section": "X-Fleet", "name": n, "value": v}
               for n, v in (("MemoryReservation", memory), ("CPUReservation", cpus)) if v]  # fmt: skip
    if xfleet:
        options.append({"section": "X-Fleet", "name": "Global", "value": xfleet})
    return [*HELLO, *options]


async def test_capacity_and_use_of_every_machine(
    api: APIServer, client: Client, registry: Registry
) -> None:
    me = await machine(
        registry, MACHINE, "10.0.0.1",
        **{"fleet.memory": str(8 * G), "fleet.cpus": "4", "fleet.memory-reserved": str(G)},
    )  # fmt: skip
    await machine(registry, OTHER, "10.0.0.2", role="web")  # says nothing of its capacity
    # nothing reserves yet (a fleet 1.0 cluster): capacities, nothing reserved
    status, headers, body = await asyncio.to_thread(
        raw, api.unix_path, "GET", "/fleet/v1/x/machines"
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {
        "machines": {
            MACHINE: {
                "memory": {"capacity": 7 * G, "held": G, "reserved": 0, "free": 7 * G},
                "cpus": {"capacity": 4.0, "held": 0.0, "reserved": 0.0, "free": 4.0},
                "overcommit": False,
                "overcommitted": False,
            },
            OTHER: {
                "memory": {"capacity": None, "held": 0, "reserved": 0, "free": None},
                "cpus": {"capacity": None, "held": 0.0, "reserved": 0.0, "free": None},
                "overcommit": False,
                "overcommitted": False,
            },
        },
        "reservingUnits": 0,
    }
    # a unit placed here, a Global one (running everywhere), one not placed
    for name, options in (("big.service", reserving("6G", "1.5")),
                          ("agent.service", reserving(cpus="0.25", xfleet="true")),
                          ("later.service", reserving("1G"))):  # fmt: skip
        await asyncio.to_thread(client.put_unit, name, options=options, desired_state="launched")
    assert await registry.schedule("big.service", MACHINE)
    use = await asyncio.to_thread(client.machines_use)
    assert use["reservingUnits"] == 3
    mine, other = use["machines"][MACHINE], use["machines"][OTHER]
    assert mine["memory"] == {"capacity": 7 * G, "held": G, "reserved": 6 * G, "free": G}
    assert mine["cpus"] == {"capacity": 4.0, "held": 0.0, "reserved": 1.75, "free": 2.25}
    assert not mine["overcommitted"]
    # a machine that does not say what it offers takes no unit that reserves: not even Global
    assert other["cpus"]["reserved"] == 0.0 and other["memory"]["capacity"] is None
    # /v1-alpha too, and fleet's GET /machines keeps fleet's shape
    status, _, body = await asyncio.to_thread(raw, api.unix_path, "GET", "/v1-alpha/x/machines")
    assert status == 200 and json.loads(body) == use
    [listed, _] = sorted(await asyncio.to_thread(client.machines), key=lambda m: m["id"])
    assert set(listed) == {"id", "primaryIP", "metadata"}

    # this fleetd's /metrics: its own machine's gauges only
    await publish(
        registry,
        me,
        "big.service",
        MACHINE,
        (await registry.snapshot()).jobs["big.service"].unit_hash,
    )
    status, _, body = await asyncio.to_thread(raw, api.unix_path, "GET", "/metrics")
    text = body.decode()
    assert status == 200
    mine_lines = [line for line in text.splitlines() if line.startswith("fleetd_machine_")]
    label = f'{{machine="{MACHINE}"}}'
    assert mine_lines == [
        f"fleetd_machine_memory_capacity_bytes{label} {7 * G}",
        f"fleetd_machine_memory_reserved_bytes{label} {6 * G}",
        f"fleetd_machine_cpus_capacity{label} 4.0",
        f"fleetd_machine_cpus_reserved{label} 1.75",
        f"fleetd_machine_overcommitted{label} 0",
    ]
    assert "# TYPE fleetd_machine_memory_reserved_bytes gauge" in text
    assert OTHER not in text


async def test_an_over_committed_machine(
    api: APIServer, client: Client, registry: Registry
) -> None:
    # fleetd restarted with less memory under a unit running there (re-registered on its lease)
    lease = await machine(registry, MACHINE, "10.0.0.1", **{"fleet.memory": str(4 * G)})
    await asyncio.to_thread(
        client.put_unit, "big.service", options=reserving("3G"), desired_state="launched"
    )
    assert await registry.schedule("big.service", MACHINE)
    unit_hash = (await registry.snapshot()).jobs["big.service"].unit_hash
    await publish(registry, lease, "big.service", MACHINE, unit_hash)
    await registry.register_machine(
        Machine(MACHINE, "10.0.0.1", {"fleet.memory": str(2 * G)}), 10, lease.id
    )
    use = (await asyncio.to_thread(client.machines_use))["machines"][MACHINE]
    assert use["memory"] == {"capacity": 2 * G, "held": 0, "reserved": 3 * G, "free": 0}
    assert use["overcommitted"] is True and use["overcommit"] is False
    _, _, body = await asyncio.to_thread(raw, api.unix_path, "GET", "/metrics")
    assert f'fleetd_machine_overcommitted{{machine="{MACHINE}"}} 1' in body.decode()
    # no capacity of CPUs said: no CPU capacity gauge, CPUs reserved still (none)
    assert "fleetd_machine_cpus_capacity" not in body.decode()
    assert f'fleetd_machine_cpus_reserved{{machine="{MACHINE}"}} 0.0' in body.decode()
