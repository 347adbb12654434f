"""Contract of fleet's API v1 over a real unix socket, against a real etcd.

Placements come from a real Engine; UnitStates are published through the registry where an
agent would (the agent path itself is covered by the end-to-end tests).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import struct

import pytest
from api_helpers import HELLO, engine_running, error_of, machine, publish, put_json, raw

from fleetd.api.client import APIError, BadEndpoint, Client, Unreachable
from fleetd.api.pagination import PageToken
from fleetd.api.server import APIServer
from fleetd.registry import Registry
from fleetd.unit import UnitFile, UnitOption
from tests.waiting import until

M1, M2 = "1" * 32, "2" * 32
JSON = {"Content-Type": "application/json"}


def hello_hash() -> str:
    return UnitFile.from_options(UnitOption(**o) for o in HELLO).hash


# --- units -----------------------------------------------------------------------------------
async def test_unit_lifecycle_with_placement_and_state(
    api: APIServer, client: Client, registry: Registry
) -> None:
    sock = api.unix_path
    status, headers, _ = await asyncio.to_thread(
        put_json, sock, "/fleet/v1/units/hello.service",
        {"name": "hello.service", "desiredState": "launched", "options": HELLO},
    )  # fmt: skip
    assert status == 201
    assert headers["Server"] == "fleetd/9.9.9"
    unit = await asyncio.to_thread(client.unit, "hello.service")
    assert unit == {
        "name": "hello.service", "options": HELLO, "desiredState": "launched",
        "currentState": "inactive",
    }  # fmt: skip

    lease = await machine(registry, M1, "10.0.0.1")
    async with engine_running(registry, M1):
        await until(registry, lambda s: "hello.service" in s.placements)
    unit = await asyncio.to_thread(client.unit, "hello.service")
    assert unit["machineID"] == M1 and unit["currentState"] == "inactive"  # no state published

    await publish(registry, lease, "hello.service", M1, hello_hash(), active="inactive")
    assert (await asyncio.to_thread(client.unit, "hello.service"))["currentState"] == "loaded"
    await publish(registry, lease, "hello.service", M1, hello_hash(), active="active")
    assert (await asyncio.to_thread(client.unit, "hello.service"))["currentState"] == "launched"

    states = await asyncio.to_thread(client.states)
    assert states == [{
        "name": "hello.service", "hash": hello_hash(), "machineID": M1,
        "systemdLoadState": "loaded", "systemdActiveState": "active",
        "systemdSubState": "running",
    }]  # fmt: skip
    assert await asyncio.to_thread(client.states, machine_id=M2) == []
    assert await asyncio.to_thread(client.states, unit_name="hello.service") == states
    status, _, body = await asyncio.to_thread(raw, sock, "GET", "/fleet/v1/state/hello.service")
    assert status == 200 and json.loads(body) == states[0]

    assert await asyncio.to_thread(client.machines) == [{"id": M1, "primaryIP": "10.0.0.1"}]
    # existing unit: a new desired state only -> 204
    assert await asyncio.to_thread(client.put_unit, "hello.service", desired_state="loaded") == 204
    assert (await registry.get_job("hello.service")).desired == "loaded"
    # same options again, no desired state: nothing to do -> 204
    assert await asyncio.to_thread(client.put_unit, "hello.service", options=HELLO) == 204

    assert await asyncio.to_thread(client.destroy_unit, "hello.service") is True
    assert await asyncio.to_thread(client.destroy_unit, "hello.service") is False
    assert await asyncio.to_thread(client.unit, "hello.service") is None
    await lease.revoke()


async def test_put_with_new_options_replaces_the_unit_in_place(
    api: APIServer, client: Client, registry: Registry
) -> None:
    assert (
        await asyncio.to_thread(
            client.put_unit, "hello.service", options=HELLO, desired_state="loaded"
        )
        == 201
    )
    other = [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]
    other_hash = UnitFile.from_options(UnitOption(**o) for o in other).hash
    # different options: replaced (201, as fleet), desired state kept
    assert await asyncio.to_thread(client.put_unit, "hello.service", options=other) == 201
    unit = await asyncio.to_thread(client.unit, "hello.service")
    assert (unit["options"], unit["desiredState"]) == (other, "loaded")
    snap = await registry.snapshot()
    assert snap.jobs["hello.service"].unit_hash == other_hash
    assert set(snap.units) == {other_hash}  # the old content had no other user
    # replaced with a desired state: both change
    assert (
        await asyncio.to_thread(
            client.put_unit, "hello.service", options=HELLO, desired_state="launched"
        )
        == 201
    )
    unit = await asyncio.to_thread(client.unit, "hello.service")
    assert (unit["options"], unit["desiredState"]) == (HELLO, "launched")
    # invalid new options are refused, nothing changes
    bad = [*HELLO, {"section": "X-Fleet", "name": "MachineID", "value": "abc"},
           {"section": "X-Fleet", "name": "Global", "value": "true"}]  # fmt: skip
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(client.put_unit, "hello.service", options=bad)
    assert (err.value.code, err.value.message) == (400, "MachineID cannot be used with Global")
    assert (await registry.get_job("hello.service")).unit_hash == hello_hash()


async def test_global_unit_has_no_current_state(api: APIServer, client: Client) -> None:
    options = [*HELLO, {"section": "X-Fleet", "name": "Global", "value": "true"}]
    assert await asyncio.to_thread(client.put_unit, "g.service", options=options) == 201
    unit = await asyncio.to_thread(client.unit, "g.service")
    assert "currentState" not in unit and unit["desiredState"] == "inactive"


def _bad_put_cases() -> list:
    hello = {"name": "hello.service", "options": HELLO}
    return [
        pytest.param("/fleet/v1/units/hello.service", b"{not json", JSON, 400,
                     "unable to decode body: ", id="malformed-json"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps([1]), JSON, 400,
                     "unable to decode body: ", id="not-an-object"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps(hello), {"Content-Type": "text/plain"},
                     415, "only acceptable Content-Type is application/json", id="content-type"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps(hello), {}, 415,
                     "expected 1 Content-Type, got 0", id="no-content-type"),
        pytest.param("/fleet/v1/units/other.service", json.dumps(hello), JSON, 400,
                     'name in URL "other.service" differs from unit name in request body "hello.service"',
                     id="name-mismatch"),
        pytest.param("/fleet/v1/units/hello", json.dumps({"options": HELLO}), JSON, 400,
                     'unit name must contain "."', id="bad-name"),
        pytest.param("/fleet/v1/units/hello.foo", json.dumps({"options": HELLO}), JSON, 400,
                     'invalid unit type: "foo"', id="bad-type"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps({**hello, "desiredState": "running"}),
                     JSON, 400, "invalid desiredState 'running'", id="unknown-desired-state"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps({"desiredState": "launched"}), JSON,
                     409, "unit does not exist and options field empty", id="create-without-options"),
        pytest.param("/fleet/v1/units/x@.service",
                     json.dumps({"options": HELLO, "desiredState": "launched"}), JSON, 400,
                     'cannot activate template "x@.service"', id="activate-template"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps({"options": [
                        *HELLO, {"section": "X-Fleet", "name": "MachineID", "value": "abc"},
                        {"section": "X-Fleet", "name": "Global", "value": "true"}]}), JSON, 400,
                     "MachineID cannot be used with Global", id="invalid-requirements"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps({"options": [
                        *HELLO, {"section": "X-Fleet", "name": "MachineMetadata",
                                 "value": "cores>=abc"}]}), JSON, 400,
                     "MachineMetadata cores>=abc: 'abc' is not a number (>= compares numbers)",
                     id="metadata-comparison-with-a-word"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps({"options": [
                        *HELLO, {"section": "X-Fleet", "name": "MachineMetadata",
                                 "value": "host=~web["}]}), JSON, 400,
                     "MachineMetadata host=~web[: invalid regular expression", id="bad-regex"),
        pytest.param("/fleet/v1/units/web@1.service", json.dumps({"options": [
                        *HELLO, {"section": "X-Fleet", "name": "MaxPerMachine", "value": "0"}]}),
                     JSON, 400, "MaxPerMachine=0: '0' is not a whole number of at least 1",
                     id="max-per-machine-zero"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps({"options": [
                        {"section": "Service", "name": "Exec\nStart", "value": "x"}]}), JSON, 400,
                     "", id="unreadable-option"),
        pytest.param("/fleet/v1/units/hello.service", json.dumps({"options": [{"section": 1}]}), JSON,
                     400, "unable to decode body: ", id="option-shape"),
    ]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "headers", "code", "message"), _bad_put_cases())
async def test_bad_put_is_refused_in_fleets_error_shape(
    api: APIServer, registry: Registry, path: str, body, headers, code: int, message: str
) -> None:
    status, got_headers, got = await asyncio.to_thread(
        raw, api.unix_path, "PUT", path, body, headers
    )
    assert status == code
    assert got_headers["Content-Type"].startswith("application/json")
    assert error_of(got)[0] == code
    assert error_of(got)[1].startswith(message)
    assert (await registry.snapshot()).jobs == {}  # nothing changed


async def test_conflicts_and_missing_units(api: APIServer, client: Client) -> None:
    assert await asyncio.to_thread(client.put_unit, "hello.service", options=HELLO) == 201
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(client.put_unit, "hello.service")
    assert (err.value.code, err.value.message) == (
        409,
        "must provide DesiredState to update existing unit",
    )
    status, _, body = await asyncio.to_thread(
        raw, api.unix_path, "GET", "/fleet/v1/units/nope.service"
    )
    assert (status, error_of(body)) == (404, (404, "unit does not exist"))
    status, _, body = await asyncio.to_thread(
        raw, api.unix_path, "DELETE", "/fleet/v1/units/nope.service"
    )
    assert (status, error_of(body)) == (404, (404, "unit does not exist"))
    status, _, body = await asyncio.to_thread(
        raw, api.unix_path, "GET", "/fleet/v1/state/nope.service"
    )
    assert (status, error_of(body)) == (404, (404, "unit state does not exist"))


async def test_routes_methods_aliases_and_alt_json(api: APIServer) -> None:
    sock = api.unix_path
    cases = [
        ("POST", "/fleet/v1/units", 405, "only GET supported against this resource"),
        ("POST", "/fleet/v1/units/a.service", 405,
         "only GET, PUT and DELETE supported against this resource"),
        ("DELETE", "/fleet/v1/machines", 405, "only GET and PATCH supported against this resource"),
        ("POST", "/fleet/v1/discovery", 400, "only GET supported against this resource"),
        ("GET", "/", 405, ""),
        ("GET", "/fleet/v1", 405, ""),
        ("GET", "/nowhere", 404, ""),
    ]  # fmt: skip
    for method, path, code, message in cases:
        status, headers, body = await asyncio.to_thread(raw, sock, method, path)
        assert (status, error_of(body)) == (code, (code, message)), path
        assert headers["Server"] == "fleetd/9.9.9"
    for prefix in ("/fleet/v1", "/v1-alpha"):
        status, _, body = await asyncio.to_thread(raw, sock, "GET", f"{prefix}/units?alt=json")
        assert (status, json.loads(body)) == (200, {"units": []})
    status, _, body = await asyncio.to_thread(raw, sock, "GET", "/fleet/v1/discovery")
    doc = json.loads(body)
    assert status == 200 and doc["id"] == "fleet:v1" and "Units" in doc["resources"]


async def test_body_too_large_is_413(registry: Registry, sock_dir) -> None:
    server = APIServer(registry, M1, max_body=1024)
    await server.start(sock_dir / "small.sock")
    try:
        body = json.dumps({"options": [{"section": "Service", "name": "X", "value": "y" * 4096}]})
        status, _, got = await asyncio.to_thread(
            raw, server.unix_path, "PUT", "/fleet/v1/units/big.service", body, JSON
        )
        assert status == 413 and error_of(got)[0] == 413
    finally:
        await server.stop()


@pytest.mark.root("chown of the socket to group 0")
async def test_unix_socket_mode_and_stale_socket(
    api: APIServer, registry: Registry, sock_dir
) -> None:
    assert stat.S_IMODE(os.stat(api.unix_path).st_mode) == 0o660
    await api.stop()  # removes its socket; a stale socket file left behind is replaced
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_dir / "stale.sock"))
    stale.close()
    server = APIServer(registry, M1)
    await server.start(sock_dir / "stale.sock", socket_group="0")
    try:
        assert os.stat(server.unix_path).st_gid == 0
        assert await asyncio.to_thread(Client(f"unix://{server.unix_path}").units) == []
    finally:
        await server.stop()
    assert not (sock_dir / "stale.sock").exists()


# --- pagination ------------------------------------------------------------------------------
async def test_pagination_over_250_units(
    api: APIServer, client: Client, registry: Registry
) -> None:
    unit = UnitFile.from_options(UnitOption(**o) for o in HELLO)
    await asyncio.gather(*(registry.create_job(f"u{i:03}.service", unit) for i in range(250)))
    sock = api.unix_path
    names, token, pages = [], None, 0
    while True:
        path = "/fleet/v1/units" + (f"?nextPageToken={token}" if token else "")
        status, _, body = await asyncio.to_thread(raw, sock, "GET", path)
        assert status == 200
        page = json.loads(body)
        pages += 1
        names += [u["name"] for u in page["units"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and names == [f"u{i:03}.service" for i in range(250)]
    # fleet's token: URL-safe base64 of little-endian uint16 limit, uint16 page
    second = base64.urlsafe_b64encode(struct.pack("<HH", 100, 2)).decode()
    assert second == PageToken(100, 2).encode()
    status, _, body = await asyncio.to_thread(
        raw, sock, "GET", f"/fleet/v1/units?nextPageToken={second}"
    )
    assert next(u["name"] for u in json.loads(body)["units"]) == "u100.service"
    assert [u["name"] for u in await asyncio.to_thread(client.units)] == names

    bad = [
        (base64.urlsafe_b64encode(struct.pack("<HH", 50, 1)).decode(), "token limit must be 100"),
        (base64.urlsafe_b64encode(struct.pack("<HH", 100, 0)).decode(),
         "token page must be greater than zero"),
        ("!!!", "invalid page token"),
        (f"{second}&nextPageToken={second}", "too many values for page token"),
    ]  # fmt: skip
    for token, message in bad:
        for path in ("units", "state", "machines"):
            status, _, body = await asyncio.to_thread(
                raw, sock, "GET", f"/fleet/v1/{path}?nextPageToken={token}"
            )
            assert status == 400 and error_of(body)[1].startswith(message), (path, token)


async def test_exactly_full_page_is_followed_by_an_empty_page(registry: Registry, sock_dir) -> None:
    unit = UnitFile.from_options(UnitOption(**o) for o in HELLO)
    for i in range(4):
        await registry.create_job(f"u{i}.service", unit)
    server = APIServer(registry, M1, token_limit=2)
    await server.start(sock_dir / "p.sock")
    try:
        _status, _, body = await asyncio.to_thread(raw, server.unix_path, "GET",
                                                  f"/fleet/v1/units?nextPageToken={PageToken(2, 2).encode()}")  # fmt: skip
        nxt = PageToken.decode(json.loads(body)["nextPageToken"])
        assert (nxt.limit, nxt.page) == (2, 3) and nxt.revision > 0
        assert await asyncio.to_thread(Client(f"unix://{server.unix_path}").units) != []
    finally:
        await server.stop()


async def test_next_pages_come_from_the_first_pages_revision(
    api: APIServer, registry: Registry
) -> None:
    """A listing is consistent: units created or destroyed between its pages do not shift
    them (no unit seen twice or missed); the next listing sees the change."""
    unit = UnitFile.from_options(UnitOption(**o) for o in HELLO)
    await asyncio.gather(*(registry.create_job(f"u{i:03}.service", unit) for i in range(150)))
    sock = api.unix_path

    def get(path: str) -> dict:
        status, _, body = raw(sock, "GET", path)
        assert status == 200, body
        return json.loads(body)

    first = await asyncio.to_thread(get, "/fleet/v1/units")
    token = first["nextPageToken"]
    assert PageToken.decode(token).revision == (await registry.snapshot()).revision
    await registry.create_job("a000.service", unit)  # sorts first: would shift every page
    await registry.destroy("u149.service")
    second = await asyncio.to_thread(get, f"/fleet/v1/units?nextPageToken={token}")
    names = [u["name"] for u in first["units"] + second["units"]]
    assert names == [f"u{i:03}.service" for i in range(150)]
    again = await asyncio.to_thread(get, "/fleet/v1/units")
    assert again["units"][0]["name"] == "a000.service"

    # the revision compacted away: the page is cut from a fresh read (as fleet would)
    await registry.compact()
    api.ctx._listings.clear()
    page = await asyncio.to_thread(get, f"/fleet/v1/units?nextPageToken={token}")
    assert page["units"][0]["name"] == "u099.service"  # a000 now shifts the fresh read by one


# --- machines --------------------------------------------------------------------------------
async def test_machines_and_patch_metadata(api: APIServer, registry: Registry) -> None:
    leases = [await machine(registry, M2, "10.0.0.2", role="db"), await machine(registry, M1)]
    status, _, body = await asyncio.to_thread(raw, api.unix_path, "GET", "/fleet/v1/machines")
    assert json.loads(body) == {"machines": [
        {"id": M1}, {"id": M2, "primaryIP": "10.0.0.2", "metadata": {"role": "db"}}]}  # fmt: skip
    cases = [
        ([{"op": "move", "path": f"/{M1}/metadata/a", "value": {"value": "b"}}], 400,
         "invalid op: expect add, remove, or replace"),
        ([{"op": "add", "path": f"/{M1}/meta/a", "value": {"value": "b"}}], 400,
         "machine metadata path invalid"),
        ([{"op": "add", "path": f"/{M1}/metadata/a"}], 400,
         "invalid value: add and replace require a value"),
    ]  # fmt: skip
    for doc, code, message in cases:
        status, _, body = await asyncio.to_thread(
            raw, api.unix_path, "PATCH", "/fleet/v1/machines", json.dumps(doc), JSON
        )
        assert status == code and error_of(body)[1].startswith(message)
    for lease in leases:
        await lease.revoke()


# --- operations ------------------------------------------------------------------------------
async def test_metrics(api: APIServer, client: Client) -> None:
    await asyncio.to_thread(client.put_unit, "hello.service", options=HELLO)
    await asyncio.to_thread(client.unit, "nope.service")
    status, headers, body = await asyncio.to_thread(raw, api.unix_path, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'fleetd_units{desired_state="inactive"} 1' in text
    assert 'fleetd_units_current{current_state="inactive"} 1' in text
    assert 'fleetd_api_requests_total{code="201"} 1' in text
    assert 'fleetd_api_requests_total{code="404"} 1' in text
    assert "fleetd_api_etcd_errors_total 0" in text


async def test_etcd_down_is_503(private_etcd, key_prefix: str, sock_dir) -> None:
    from fleetd.registry import EtcdConfig

    config = EtcdConfig(
        endpoints=private_etcd.endpoints, key_prefix=key_prefix, request_timeout=1.0
    )
    async with Registry(config) as registry:
        server = APIServer(registry, M1)
        await server.start(sock_dir / "down.sock")
        try:
            private_etcd.stop()
            status, _, body = await asyncio.to_thread(
                raw, server.unix_path, "GET", "/fleet/v1/units"
            )
            assert (status, error_of(body)) == (
                503,
                (503, "fleet server unable to communicate with etcd"),
            )
        finally:
            await server.stop()


# --- client ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "message"), [
    ("unix://var/run/fleet.sock", 'unable to connect to host "var" with scheme "unix"'),
    ("/var/run/fleet.sock", "URL scheme undefined"),
    ("ftp://host:1", 'unable to connect to host "host:1" with scheme "ftp"'),
])  # fmt: skip
def test_client_refuses_bad_endpoints(endpoint: str, message: str) -> None:
    with pytest.raises(BadEndpoint) as err:
        Client(endpoint)
    assert err.value.message == message


def test_client_names_an_unreachable_endpoint(tmp_path) -> None:
    endpoint = f"unix://{tmp_path}/none.sock,http://127.0.0.1:1"
    with pytest.raises(Unreachable) as err:
        Client(endpoint).units()
    assert f"unix://{tmp_path}/none.sock" in err.value.message
