"""`POST /fleet/v1/x/units`: many unit requests in one, over a real unix socket and real etcd.

Each request of a batch is answered as its own PUT or DELETE would be; a malformed batch is
refused as a whole (400) and changes nothing; fleetctl falls back to one request per unit
against a server without the extension.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import HELLO, error_of, raw

from fleetd.api.client import Client
from fleetd.api.server import APIServer
from fleetd.registry import Registry

JSON = {"Content-Type": "application/json"}


def post(sock: str, doc: object) -> tuple[int, object]:
    status, _, body = raw(sock, "POST", "/fleet/v1/x/units", json.dumps(doc).encode(), JSON)
    return status, json.loads(body)


def put(name: str, **body: object) -> dict[str, object]:
    return {"method": "PUT", "name": name, "body": {"name": name, **body}}


async def test_each_request_answered_as_alone(
    api: APIServer, client: Client, registry: Registry
) -> None:
    sock = api.unix_path
    await asyncio.to_thread(client.put_unit, "old.service", options=HELLO)
    requests = [
        put("a.service", options=HELLO, desiredState="launched"),  # created: 201
        put("b.service", options=HELLO),  # created inactive: 201
        put("old.service", desiredState="loaded"),  # existing, new desired state: 204
        put("new.service", desiredState="launched"),  # no options, does not exist: 409
        put("bad/x.service", options=HELLO),  # not a unit name: 400
        put("tmpl@.service", options=HELLO, desiredState="launched"),  # template: 400
        {"method": "DELETE", "name": "gone.service"},  # 404
        put(
            "big.service",
            desiredState="launched",
            options=[  # a rule refused: 400
                *HELLO,
                {"section": "X-Fleet", "name": "MachineMetadata", "value": "cores>=lots"},
            ],
        ),
    ]
    status, body = await asyncio.to_thread(post, sock, {"requests": requests})
    assert status == 200
    answers = body["responses"]  # type: ignore[index]
    assert [(a["name"], a["status"]) for a in answers] == [
        ("a.service", 201), ("b.service", 201), ("old.service", 204), ("new.service", 409),
        ("bad/x.service", 400), ("tmpl@.service", 400), ("gone.service", 404),
        ("big.service", 400),
    ]  # fmt: skip
    assert answers[7]["error"]["message"] == (
        "MachineMetadata cores>=lots: 'lots' is not a number (>= compares numbers)"
    )
    assert answers[3]["error"] == {
        "code": 409, "message": "unit does not exist and options field empty"
    }  # fmt: skip
    assert answers[5]["error"]["message"] == 'cannot activate template "tmpl@.service"'
    assert "error" not in answers[0]
    snap = await registry.snapshot()
    assert {n: j.desired.value for n, j in snap.jobs.items()} == {
        "a.service": "launched", "b.service": "inactive", "old.service": "loaded",
    }  # fmt: skip

    # deletes and puts together, through the client
    errors = await asyncio.to_thread(
        client.batch,
        [{"method": "DELETE", "name": "a.service"}, put("b.service", desiredState="loaded")],
    )
    assert errors == [None, None]
    snap = await registry.snapshot()
    assert {n: j.desired.value for n, j in snap.jobs.items()} == {
        "b.service": "loaded", "old.service": "loaded",
    }  # fmt: skip


async def test_gets_read_only_the_units_named(
    api: APIServer, client: Client, registry: Registry
) -> None:
    """GETs in a batch are answered as `GET /units/{name}` would be (the Unit, or 404), read
    from those units' keys at one revision; with writes in the same batch each is answered
    on its own. `Client.units_named` asks its names so, however many."""
    units = [{"name": f"u{i}.service", "options": HELLO} for i in range(150)]
    assert await asyncio.to_thread(client.put_units, units) == [None] * 150
    requests = [
        {"method": "GET", "name": "u7.service"},
        {"method": "GET", "name": "ghost.service"},
        {"method": "GET", "name": "bad/x.service"},
        put("new.service", options=HELLO),
    ]
    status, body = await asyncio.to_thread(post, api.unix_path, {"requests": requests})
    assert status == 200
    answers = body["responses"]  # type: ignore[index]
    assert [(a["name"], a["status"]) for a in answers] == [
        ("u7.service", 200), ("ghost.service", 404), ("bad/x.service", 404),
        ("new.service", 201),
    ]  # fmt: skip
    alone = await asyncio.to_thread(client.unit, "u7.service")
    assert answers[0]["unit"] == alone
    assert answers[1]["error"] == {"code": 404, "message": "unit does not exist"}

    names = [f"u{i}.service" for i in range(0, 150, 2)] + ["ghost.service"]
    found = await asyncio.to_thread(client.units_named, names)
    assert sorted(found) == sorted(names[:-1])
    assert found["u8.service"] == await asyncio.to_thread(client.unit, "u8.service")


async def test_deletes_of_concurrent_batches_answered_each_as_alone(
    api: APIServer, client: Client, registry: Registry
) -> None:
    """Batches served at the same time destroy their units together (one registry listing for
    all, as fleetctl's ten batches of a destroy of 1,000 units); each batch still gets its own
    answers, in its order: a unit another batch destroyed too is destroyed once (204 for one
    of them, 404 for the rest), one that never existed is 404."""
    units = [{"name": f"u{i}.service", "options": HELLO} for i in range(20)]
    units.append({"name": "shared.service", "options": HELLO})
    assert await asyncio.to_thread(client.put_units, units) == [None] * 21

    def deletes(k: int) -> list[dict[str, str]]:
        names = [f"u{i}.service" for i in range(5 * k, 5 * k + 5)]
        names += ["shared.service", f"gone{k}.service"]
        return [{"method": "DELETE", "name": name} for name in names]

    answers = await asyncio.gather(
        *(asyncio.to_thread(post, api.unix_path, {"requests": deletes(k)}) for k in range(4))
    )
    shared = []
    for k, (status, body) in enumerate(answers):
        assert status == 200
        got = [(a["name"], a["status"]) for a in body["responses"]]  # type: ignore[index]
        assert got[:5] == [(f"u{i}.service", 204) for i in range(5 * k, 5 * k + 5)]
        assert got[6] == (f"gone{k}.service", 404)
        assert got[5][0] == "shared.service"
        shared.append(got[5][1])
    assert sorted(shared) == [204, 404, 404, 404]
    assert (await registry.snapshot()).jobs == {}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], 'unable to decode body: expected {"requests": [...]}'),
        ({"requests": "x"}, 'unable to decode body: expected {"requests": [...]}'),
        ({"requests": []}, "a batch holds 1 to 1000 requests, not 0"),
        ({"requests": [{"method": "PATCH", "name": "a.service"}]},
         'request 0: expected {"method": "GET", "PUT" or "DELETE", ...}'),
        ({"requests": [{"method": "PUT", "name": "", "body": {}}]},
         "request 0: name must be a non-empty string"),
        ({"requests": [{"method": "PUT", "name": "a.service"}]},
         "request 0: a PUT needs a body object (a Unit)"),
        ({"requests": [put("a.service", options=HELLO), {"method": "DELETE", "name": "a.service"}]},
         "a batch names each unit once"),
        ({"requests": [{"method": "DELETE", "name": f"u{i}.service"} for i in range(1001)]},
         "a batch holds 1 to 1000 requests, not 1001"),
    ],
)  # fmt: skip
async def test_malformed_batch_is_refused_whole_and_changes_nothing(
    api: APIServer, registry: Registry, doc: object, message: str
) -> None:
    before = await registry.snapshot()
    status, _, body = await asyncio.to_thread(
        raw, api.unix_path, "POST", "/fleet/v1/x/units", json.dumps(doc).encode(), JSON
    )
    assert (status, error_of(body)) == (400, (400, message))
    after = await registry.snapshot()
    assert after.jobs == before.jobs and after.units == before.units


class _OldServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A fleet API without fleetd's extensions: answers every unit PUT 204, x/units 404."""

    daemon_threads = True
    seen: list[tuple[str, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path.split("?")[0]))  # type: ignore[attr-defined]
        body = b'{"error":{"code":404,"message":""}}' if status == 404 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:  # (writing nothing after a 204 raced the client's close: EPIPE, printed)
            self.wfile.write(body)

    def do_POST(self) -> None:
        self._answer(404)

    def do_GET(self) -> None:
        self._answer(404)

    def do_PUT(self) -> None:
        self._answer(204)


@pytest.fixture
def old_server(tmp_path: Path) -> Iterator[_OldServer]:
    server = _OldServer(str(tmp_path / "old.sock"), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fleetctl_falls_back_to_one_request_per_unit(old_server: _OldServer) -> None:
    client = Client(f"unix://{old_server.server_address}")
    errors = client.put_units([{"name": "a.service", "desiredState": "launched"},
                               {"name": "b.service", "desiredState": "launched"}])  # fmt: skip
    assert errors == [None, None]
    assert sorted(old_server.seen) == [
        ("POST", "/fleet/v1/x/units"),
        ("PUT", "/fleet/v1/units/a.service"),
        ("PUT", "/fleet/v1/units/b.service"),
    ]


async def test_large_unit_files_go_in_batches_sized_by_bytes(
    api: APIServer, client: Client, registry: Registry
) -> None:
    """Thirty units of ~60 KB each: 1.8 MB in all, over the server's 1 MiB body limit; the
    client's batches are sized by bytes as well as count, so none is refused with 413."""
    filler = [
        {"section": "Service", "name": "Environment", "value": f"V{i}={'x' * 1500}"}
        for i in range(40)
    ]
    units = [
        {"name": f"big{n}.service", "options": [*HELLO, *filler], "desiredState": "inactive"}
        for n in range(30)
    ]
    assert len(json.dumps(units)) > api.max_body
    answers = await asyncio.to_thread(client.put_units, units)
    assert answers == [None] * 30
    snapshot = await registry.snapshot()
    assert {f"big{n}.service" for n in range(30)} <= set(snapshot.jobs)


def test_units_named_falls_back_to_one_get_per_unit(old_server: _OldServer) -> None:
    """A server without `x/units` (fleet) is asked each unit alone (a listing above 8)."""
    client = Client(f"unix://{old_server.server_address}")
    assert client.units_named(["a.service", "b.service"]) == {}
    assert sorted(old_server.seen) == [
        ("GET", "/fleet/v1/units/a.service"),
        ("GET", "/fleet/v1/units/b.service"),
        ("POST", "/fleet/v1/x/units"),
    ]
