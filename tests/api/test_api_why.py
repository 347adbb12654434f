"""`GET x/why/{name}` and `GET x/unplaced`: a real APIServer on a unix socket over the session
etcd (no engine: the API runs the planner on the registry as it is)."""

from __future__ import annotations

import asyncio
import json

import pytest
from api_helpers import HELLO, error_of, machine, put_json, raw

from fleetd.api.client import Client
from fleetd.api.server import APIServer
from fleetd.registry import Registry

M1, M2 = "1" * 32, "2" * 32
NOT_EU = [*HELLO, {"section": "X-Fleet", "name": "MachineMetadata", "value": "region!=eu"}]


async def test_why_refuses_bad_names_and_unknown_units(api: APIServer) -> None:
    sock = api.unix_path
    status, _, body = await asyncio.to_thread(
        raw, sock, "GET", "/fleet/v1/x/why/bad%20name.service"
    )
    assert (status, error_of(body)) == (400, (400, "invalid character ' ' in unit name"))
    status, _, body = await asyncio.to_thread(raw, sock, "GET", "/fleet/v1/x/why/hello")
    assert (status, error_of(body)) == (400, (400, 'unit name must contain "."'))
    status, _, body = await asyncio.to_thread(raw, sock, "GET", "/fleet/v1/x/why/nope.service")
    assert (status, error_of(body)) == (404, (404, "Unit nope.service does not exist."))
    status, _, body = await asyncio.to_thread(raw, sock, "GET", "/fleet/v1/x/unplaced")
    assert (status, json.loads(body)) == (200, {"units": {}})


async def test_why_and_unplaced_of_a_unit_no_machine_takes(
    api: APIServer, client: Client, registry: Registry
) -> None:
    await machine(registry, M1, "10.0.0.1", region="eu")
    await machine(registry, M2, "10.0.0.2")
    sock = api.unix_path
    doc = {"desiredState": "launched", "options": NOT_EU}
    status, _, _ = await asyncio.to_thread(put_json, sock, "/fleet/v1/units/web.service", doc)
    assert status == 201
    doc = {"desiredState": "inactive", "options": HELLO}
    status, _, _ = await asyncio.to_thread(put_json, sock, "/fleet/v1/units/hello.service", doc)
    assert status == 201

    for prefix in ("/fleet/v1", "/v1-alpha"):
        status, _, body = await asyncio.to_thread(raw, sock, "GET", f"{prefix}/x/why/web.service")
        assert status == 200
        why = json.loads(body)
        assert why["kind"] == "unplaced" and why["machines"] == 2 and why["feasible"] == 0
        assert why["lines"][:2] == [
            "Unit web.service is not placed on any machine.",
            "Reason: no machine matches MachineMetadata region!=eu",
        ]
        assert why["rejections"][0]["examples"] == [
            {"machine": "11111111", "detail": "region=eu"},
            {"machine": "22222222", "detail": "no region"},
        ]
    assert (await asyncio.to_thread(client.why, "hello.service"))["lines"] == [
        "Unit hello.service is not scheduled: its desired state is inactive."
    ]
    assert await asyncio.to_thread(client.unplaced) == {
        "web.service": "no machine matches MachineMetadata region!=eu"
    }


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ("..", 'unit name cannot end in "."'),
        ("%2E%2E", 'unit name cannot end in "."'),
        ("a%2Fb.service", "invalid character '/' in unit name"),
        ("a%00.service", "invalid character '\\x00' in unit name"),
        ("x" * 300 + ".service", "unit name exceeds maximum length (256)"),
        ("@a.service", 'unit name cannot start in "@"'),
    ],
)
async def test_why_of_odd_names_is_fleets_name_error(
    api: APIServer, segment: str, message: str
) -> None:
    status, _, body = await asyncio.to_thread(
        raw, api.unix_path, "GET", f"/fleet/v1/x/why/{segment}"
    )
    assert (status, error_of(body)) == (400, (400, message))
