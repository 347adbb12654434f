"""PATCH /machines: dynamic metadata over a real unix socket and a real etcd, and a real Engine
placing units by it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from api_helpers import HELLO, engine_running, error_of, machine, raw

from fleetd.api.client import Client
from fleetd.api.server import APIServer
from fleetd.registry import Registry, Snapshot
from tests.waiting import until

M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
JSON = {"Content-Type": "application/json"}


def op(kind: str, mid: str, key: str, value: str | None = None) -> dict:
    doc: dict = {"op": kind, "path": f"/{mid}/metadata/{key}"}
    if value is not None:
        doc["value"] = {"value": value}  # fleet's nested value object
    return doc


async def patch(api: APIServer, ops: list[dict]) -> tuple[int, bytes]:
    status, headers, body = await asyncio.to_thread(
        raw, api.unix_path, "PATCH", "/fleet/v1/machines", json.dumps(ops), JSON
    )
    assert headers["Content-Type"].startswith("application/json")
    return status, body


async def metadata_of(client: Client) -> dict[str, dict[str, str]]:
    return {m["id"]: m.get("metadata", {}) for m in await asyncio.to_thread(client.machines)}


async def test_patch_overrides_config_metadata_and_outlives_registration(
    api: APIServer, client: Client, registry: Registry
) -> None:
    lease1 = await machine(registry, M1, role="web", az="1")
    lease2 = await machine(registry, M2)
    # add, replace (overrides the configured value), on two machines in one PATCH
    assert await patch(api, [op("add", M1, "disk", "ssd"), op("replace", M1, "role", "db"),
                             op("add", M2, "role", "db")]) == (204, b"")  # fmt: skip
    assert await metadata_of(client) == {
        M1: {"role": "db", "az": "1", "disk": "ssd"}, M2: {"role": "db"}}  # fmt: skip
    # remove: the key is gone whether it was configured (az) or dynamic (disk)
    assert (await patch(api, [op("remove", M1, "az"), op("remove", M1, "disk")]))[0] == 204
    assert await metadata_of(client) == {M1: {"role": "db"}, M2: {"role": "db"}}
    # a machine not registered: accepted (as fleet), applied once it registers
    assert (await patch(api, [op("add", M3, "role", "spare")]))[0] == 204
    assert M3 not in await metadata_of(client)
    lease3 = await machine(registry, M3, role="web")
    assert (await metadata_of(client))[M3] == {"role": "spare"}
    # re-registration (lease gone, machine back with its config) keeps the dynamic metadata
    await lease1.revoke()
    assert M1 not in await metadata_of(client)
    lease1 = await machine(registry, M1, role="web", az="1")
    assert (await metadata_of(client))[M1] == {"role": "db"}
    for lease in (lease1, lease2, lease3):
        await lease.revoke()


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([op("move", M1, "a", "b")], "invalid op: expect add, remove, or replace"),
        (
            [{"op": "add", "path": f"/{M1}/meta/a", "value": {"value": "b"}}],
            "machine metadata path invalid",
        ),
        ([op("add", M1, "a b", "c")], "machine metadata path invalid"),
        ([op("add", M1, "a")], "invalid value: add and replace require a value"),
        ([op("replace", M1, "a", "")], "invalid value: add and replace require a value"),
        # one bad operation refuses the whole PATCH: the good one before it is not applied
        (
            [op("add", M1, "ok", "1"), op("add", M1, "a")],
            "invalid value: add and replace require a value",
        ),
        # keys beginning with "fleet." are reserved for machine facts fleetd measures
        (
            [op("add", M1, "ok", "1"), op("remove", M1, "fleet.cpus")],
            "metadata key 'fleet.cpus' is reserved: keys beginning with 'fleet.' are machine facts "
            "measured by fleetd",
        ),
    ],
    ids=["bad-op", "bad-path", "bad-key", "no-value", "empty-value", "all-or-nothing", "reserved"],
)
async def test_bad_patch_is_400_and_changes_nothing(
    api: APIServer, registry: Registry, ops: list[dict], message: str
) -> None:
    status, body = await patch(api, ops)
    assert (status, error_of(body)) == (400, (400, message))
    assert (await registry.snapshot()).dynamic_metadata == {}


async def test_patched_metadata_places_and_moves_units(
    api: APIServer, client: Client, registry: Registry
) -> None:
    leases = [await machine(registry, M1, role="web"), await machine(registry, M2)]
    options = [*HELLO, {"section": "X-Fleet", "name": "MachineMetadata", "value": "role=db"}]
    await asyncio.to_thread(
        client.put_unit, "db.service", options=options, desired_state="launched"
    )

    def on(mid: str | None) -> Callable[[Snapshot], bool]:
        def placed(s: Snapshot) -> bool:
            return s.placements.get("db.service") == mid

        return placed

    async with engine_running(registry, M1) as engine:
        await engine.wait_planned(lambda e: "db.service" in e.unplaced)
        assert "role=db" in engine.unplaced["db.service"]
        # role=db on M2: the waiting unit is placed there
        assert (await patch(api, [op("add", M2, "role", "db")]))[0] == 204
        await until(registry, on(M2))
        # M1 gets role=db too (overriding its configured web); then role removed from M2: the
        # unit moves to M1, the one machine still matching (the watch delivers both in order)
        assert (await patch(api, [op("replace", M1, "role", "db")]))[0] == 204
        assert (await patch(api, [op("remove", M2, "role")]))[0] == 204
        await until(registry, on(M1))
        # and removed from M1 (its configured role=web is deleted too): nowhere to run
        assert (await patch(api, [op("remove", M1, "role")]))[0] == 204
        await until(registry, on(None))
        await engine.wait_planned(lambda e: "db.service" in e.unplaced)
    for lease in leases:
        await lease.revoke()
