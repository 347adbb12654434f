"""Many clients at once, the TLS listener, the wait stream, and a fleet client written from
fleet's documentation (Documentation/api-v1.md), not from our code."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from api_helpers import HELLO, engine_running, machine, publish

from fleetd.api.client import APIError, Client, Unreachable
from fleetd.api.server import APIServer, TLSFiles
from fleetd.model import JobState
from fleetd.registry import Registry
from fleetd.sandbox.pki import make_pki
from fleetd.unit import UnitFile, UnitOption
from tests.waiting import until

M1 = "1" * 32
DEADLINE = 20.0  # a bound against hanging, not an expectation of speed


def hello_hash() -> str:
    return UnitFile.from_options(UnitOption(**o) for o in HELLO).hash


async def test_100_concurrent_clients_lose_no_update(
    api: APIServer, client: Client, registry: Registry
) -> None:
    await asyncio.to_thread(client.put_unit, "shared.service", options=HELLO)

    def one_client(i: int) -> None:
        c = Client(f"unix://{api.unix_path}", timeout=30.0)
        name = f"c{i:03}.service"
        assert c.put_unit(name, options=HELLO) == 201
        assert c.put_unit(name, desired_state="launched") == 204
        assert c.put_unit("shared.service", desired_state=("loaded", "launched")[i % 2]) == 204
        # listing while others write: fleet's offset pages may shift under concurrent
        # creates/destroys, so only "no error" is asserted of the list itself
        assert len(c.units()) >= 1
        assert c.unit(name)["desiredState"] == "launched"
        if i % 10 == 0:
            assert c.destroy_unit(name) is True

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=100) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, one_client, i) for i in range(100)))

    snapshot = await registry.snapshot()
    expected = {f"c{i:03}.service" for i in range(100) if i % 10}
    assert set(snapshot.jobs) - {"shared.service"} == expected
    assert all(snapshot.jobs[n].desired == JobState.LAUNCHED for n in expected)
    assert snapshot.jobs["shared.service"].desired in (JobState.LOADED, JobState.LAUNCHED)
    assert len(snapshot.units) == 1  # one content, shared by every job
    assert api.metrics.requests.keys() <= {200, 201, 204}  # not one error answered


async def test_tls_listener_requires_a_client_certificate_from_the_ca(
    registry: Registry, sock_dir: Path, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    rogue = make_pki(tmp_path / "rogue", ca_name="another CA")
    server = APIServer(registry, M1)
    await server.start(
        sock_dir / "tls.sock", tcp=("127.0.0.1", 0), tls=TLSFiles(
            str(pki.server_cert), str(pki.server_key), str(pki.ca))
    )  # fmt: skip
    host, port = server.tcp_address
    try:
        good = Client(f"https://{host}:{port}", ca_file=str(pki.ca),
                      cert_file=str(pki.client_cert), key_file=str(pki.client_key))  # fmt: skip
        assert await asyncio.to_thread(good.put_unit, "tls.service", options=HELLO) == 201
        assert [u["name"] for u in await asyncio.to_thread(good.units)] == ["tls.service"]

        for who in (
            Client(f"https://{host}:{port}", ca_file=str(pki.ca)),  # no certificate
            Client(f"https://{host}:{port}", ca_file=str(pki.ca),
                   cert_file=str(rogue.client_cert), key_file=str(rogue.client_key)),
        ):  # fmt: skip
            with pytest.raises(Unreachable):
                await asyncio.to_thread(who.units)

        def plain_http() -> None:  # no TLS at all: never an answer
            conn = http.client.HTTPConnection(host, port, timeout=10)
            try:
                conn.request("GET", "/fleet/v1/units")
                conn.getresponse().read()
            finally:
                conn.close()

        with pytest.raises((ConnectionError, http.client.HTTPException, socket.timeout)):
            await asyncio.to_thread(plain_http)
        with pytest.raises(ValueError):
            await APIServer(registry, M1).start(tcp=("127.0.0.1", 0))
    finally:
        await server.stop()


async def test_wait_streams_units_as_they_reach_the_state(
    api: APIServer, client: Client, registry: Registry
) -> None:
    for name in ("a.service", "b.service"):
        await asyncio.to_thread(client.put_unit, name, options=HELLO, desired_state="launched")
    lease = await machine(registry, M1, "10.0.0.1")
    lines: asyncio.Queue[dict] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def consume() -> None:
        for line in client.wait(
            ["a.service", "b.service"], "launched", active=True, timeout=DEADLINE
        ):
            loop.call_soon_threadsafe(lines.put_nowait, line)

    reader = asyncio.create_task(asyncio.to_thread(consume))
    async with engine_running(registry, M1):
        await until(registry, lambda s: len(s.placements) == 2)
    await publish(registry, lease, "a.service", M1, hello_hash(), active="active")
    first = await asyncio.wait_for(lines.get(), DEADLINE)
    assert first == {"name": "a.service", "currentState": "launched", "machineID": M1,
                     "machineIP": "10.0.0.1"}  # fmt: skip
    assert lines.empty()
    # activating is on its way; failed is a definite answer: the wait reports it at once
    await publish(registry, lease, "b.service", M1, hello_hash(), active="activating")
    await publish(registry, lease, "b.service", M1, hello_hash(), active="failed")
    second = await asyncio.wait_for(lines.get(), DEADLINE)
    assert second == {"name": "b.service", "currentState": "failed", "machineID": M1,
                      "machineIP": "10.0.0.1", "failed": True, "load": "loaded",
                      "active": "failed", "sub": "failed",
                      "reason": "systemd reports ActiveState=failed SubState=failed"}  # fmt: skip
    assert await asyncio.wait_for(lines.get(), DEADLINE) == {"done": True, "pending": []}
    await asyncio.wait_for(reader, DEADLINE)
    await lease.revoke()


async def test_wait_timeout_reports_why_units_are_pending(
    api: APIServer, client: Client, registry: Registry
) -> None:
    needs_db = [*HELLO, {"section": "X-Fleet", "name": "MachineMetadata", "value": "role=db"}]
    await asyncio.to_thread(client.put_unit, "db.service", options=needs_db, desired_state="loaded")
    await asyncio.to_thread(client.put_unit, "idle.service", options=HELLO)
    lease = await machine(registry, M1, "10.0.0.1", role="web")
    got = await asyncio.to_thread(
        lambda: list(
            client.wait(["idle.service", "db.service", "gone.service"], "loaded", timeout=0.2)
        )
    )
    # no machine can take db.service: a definite answer, given at once
    assert got[0] == {"name": "db.service", "currentState": "inactive", "failed": True,
                      "unschedulable": True,
                      "reason": "cannot be scheduled: no machine matches MachineMetadata "
                                "role=db"}  # fmt: skip
    assert got[-1]["done"] is True
    pending = {p["name"]: p for p in got[-1]["pending"]}
    assert set(pending) == {"idle.service", "gone.service"}
    assert pending["idle.service"]["reason"].startswith("desired state is inactive")
    assert pending["gone.service"] == {"name": "gone.service", "currentState": None,
                                       "reason": "unit does not exist"}  # fmt: skip
    # inactive is reached at once
    got = await asyncio.to_thread(lambda: list(client.wait(["idle.service"], "inactive")))
    assert got == [
        {"name": "idle.service", "currentState": "inactive"},
        {"done": True, "pending": []},
    ]
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(lambda: list(client.wait(["idle.service"], "running")))
    assert err.value.code == 400
    await lease.revoke()


# --- a client written from fleet's Documentation/api-v1.md ------------------------------------
class DocClient:
    """fleet API v1 as its documentation describes it: JSON over HTTP, `/fleet/v1/...`."""

    def __init__(self, sock: str) -> None:
        self.sock = sock

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        class Conn(http.client.HTTPConnection):
            def connect(inner) -> None:
                inner.sock = socket.socket(socket.AF_UNIX)
                inner.sock.connect(self.sock)

        conn = Conn("localhost", timeout=10)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, f"/fleet/v1{path}", json.dumps(body) if body else None, headers)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        return resp.status, json.loads(raw) if raw else None

    def create(self, name: str, options: list[dict], desired: str) -> int:
        # "Create a Unit": PUT /units/<name> with a Unit entity: name, options, desiredState
        return self._request("PUT", f"/units/{name}",
                             {"name": name, "desiredState": desired, "options": options})[0]  # fmt: skip

    def modify(self, name: str, desired: str) -> int:
        # "Modify a Unit's desiredState": PUT with only name and desiredState
        return self._request("PUT", f"/units/{name}", {"name": name, "desiredState": desired})[0]

    def list_units(self) -> list[dict]:
        units, token = [], ""
        while True:
            status, page = self._request(
                "GET", "/units" + (f"?nextPageToken={token}" if token else "")
            )
            assert status == 200
            units += page.get("units", [])
            token = page.get("nextPageToken", "")
            if not token:
                return units

    def list_states(self) -> list[dict]:
        return self._request("GET", "/state")[1].get("states", [])


async def test_a_client_from_fleets_documentation_submits_starts_and_lists(
    api: APIServer, registry: Registry
) -> None:
    doc = DocClient(api.unix_path)
    assert await asyncio.to_thread(doc.create, "hello.service", HELLO, "inactive") == 201
    assert await asyncio.to_thread(doc.modify, "hello.service", "launched") == 204
    lease = await machine(registry, M1, "10.0.0.1")
    async with engine_running(registry, M1):
        await until(registry, lambda s: "hello.service" in s.placements)
    await publish(registry, lease, "hello.service", M1, hello_hash(), active="active")
    units = await asyncio.to_thread(doc.list_units)
    assert [(u["name"], u["desiredState"], u["currentState"], u["machineID"]) for u in units] == [
        ("hello.service", "launched", "launched", M1)
    ]
    states = await asyncio.to_thread(doc.list_states)
    assert [(s["name"], s["systemdActiveState"], s["systemdSubState"]) for s in states] == [
        ("hello.service", "active", "running")
    ]
    await lease.revoke()
