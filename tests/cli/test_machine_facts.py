"""A machine's facts (`fleet.*` metadata) as the API and fleetctl show them, and what cannot
change them: the machine fleetd registers (`fleetd.daemon.machine_of`: its configuration and
the facts measured on this machine), a real registry and etcd, a real API server on a unix
socket, the real fleetctl entry point. Placement by facts on real machines:
tests/e2e/test_machine_facts.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetd.api.client import APIError, Client
from fleetd.api.server import APIServer
from fleetd.config import ConfigError, build_config
from fleetd.daemon import machine_of
from fleetd.facts import measure
from fleetd.model import Machine
from fleetd.registry import Registry
from tests.cli.conftest import Cluster, fleetctl_env

MID = "f" * 32
RESERVED = "metadata key 'fleet.cpus' is reserved: keys beginning with 'fleet.' are machine facts"


def config_of(units_dir: Path, metadata: str):  # type: ignore[no-untyped-def]
    return build_config(
        {"machine_id": MID, "public_ip": "127.0.0.11", "metadata": metadata,
         "units_directory": str(units_dir)}
    )  # fmt: skip


@pytest.fixture
async def one_machine(
    registry: Registry, sock_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, Machine, dict[str, str]]]:
    """One machine registered as its fleetd registers it (configured role=web), and the API."""
    config = config_of(tmp_path / "units", "role=web")
    facts = measure(config.units_directory)
    machine = machine_of(config, facts)
    lease = await registry.register_machine(machine, 30)
    server = APIServer(registry, MID)
    await server.start(sock_dir / "fleet.sock")
    try:
        yield (
            Cluster(f"unix://{sock_dir}/fleet.sock", registry, tmp_path, fleetctl_env()),
            machine,
            facts,
        )
    finally:
        await server.stop()
        await lease.revoke()


async def shown(cluster: Cluster) -> tuple[dict[str, str], dict[str, str]]:
    """What GET /machines says of the machine's metadata, and `list-machines --output json`'s
    row of it."""
    client = Client(cluster.endpoint, timeout=10.0)
    [api] = await asyncio.to_thread(client.machines)
    rc, out, err = await cluster.fleetctl("list-machines", "--full", "--output", "json")
    assert (rc, err) == (0, "")
    [row] = json.loads(out)
    return api["metadata"], row


async def test_facts_are_metadata_of_the_api_and_a_column_of_their_own_in_fleetctl(
    one_machine: tuple[Cluster, Machine, dict[str, str]],
) -> None:
    cluster, machine, facts = one_machine
    assert {"fleet.cpus", "fleet.memory", "fleet.kernel"} <= set(facts)
    as_text = ",".join(f"{k}={facts[k]}" for k in sorted(facts))
    api, row = await shown(cluster)
    # the API: fleet's metadata map, facts in it (what MachineMetadata= is matched against)
    assert api == {"role": "web", **facts} == dict(machine.metadata)
    # --output json: the default fields and the facts
    assert row == {"machine": MID, "ip": "127.0.0.11", "metadata": "role=web", "facts": as_text}
    # the table stays fleet's: no facts in METADATA, with or without --full
    for args in ((), ("--full",)):
        rc, out, _ = await cluster.fleetctl("list-machines", "--no-legend", *args)
        assert (rc, out.split()) == (
            0,
            [MID if args else f"{MID[:8]}...", "127.0.0.11", "role=web"],
        )
    # a FACTS column when asked for
    rc, out, _ = await cluster.fleetctl("list-machines", "--fields", "machine,facts")
    assert (rc, out.splitlines()[1].split("\t")[-1]) == (0, as_text)
    # and the fields asked for, alone, in json
    rc, out, _ = await cluster.fleetctl(
        "list-machines", "--fields", "facts", "--no-legend", "--output", "json"
    )
    assert json.loads(out) == [{"facts": as_text}]


async def test_nothing_but_the_measure_sets_a_fact(
    one_machine: tuple[Cluster, Machine, dict[str, str]], tmp_path: Path
) -> None:
    cluster, _, facts = one_machine
    # fleet.conf: refused at start (fleetd exits 2 with this line)
    with pytest.raises(ConfigError, match=RESERVED):
        config_of(tmp_path, "role=web,fleet.cpus=64")
    # PATCH /machines, and fleetctl set-metadata / unset-metadata: refused, nothing written
    client = Client(cluster.endpoint, timeout=10.0)
    ops = [{"op": "replace", "path": f"/{MID}/metadata/fleet.cpus", "value": {"value": "64"}}]
    with pytest.raises(APIError, match=RESERVED):
        await asyncio.to_thread(client.patch_machines, ops)
    for args in (("set-metadata", MID, "fleet.cpus=64"), ("unset-metadata", MID, "fleet.cpus")):
        rc, out, err = await cluster.fleetctl(*args)
        assert (rc, out) == (1, "") and RESERVED in err, args
    assert (await cluster.registry.snapshot()).dynamic_metadata == {}
    # dynamic metadata written into etcd past those checks: the facts stand, other keys apply
    await cluster.registry.set_machine_metadata(
        {MID: {"fleet.cpus": "64", "fleet.kernel": "", "fleet.gpus": "8", "role": "db"}}
    )
    api, row = await shown(cluster)
    assert api == {"role": "db", **facts}
    assert row["facts"] == ",".join(f"{k}={facts[k]}" for k in sorted(facts))
