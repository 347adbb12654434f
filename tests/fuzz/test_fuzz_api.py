"""Fuzzing the HTTP API: a real APIServer on a unix socket over the real (session) etcd.

Random JSON and random bytes PUT to /fleet/v1/units/<random name>, random PATCH /machines bodies,
random methods, paths and query strings. Every answer must be fleet's error shape (or a success),
never a 500; a 4xx names its problem; a rejected request changes nothing in the registry (the
snapshot of this test's prefix is the same before and after).

The server runs on an event loop in a thread of its own, so hypothesis drives plain synchronous
HTTP requests (http.client over the socket) and each case is one real round trip.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetd.api.server import APIServer
from fleetd.registry import EtcdConfig, Registry, Snapshot
from fleetd.sandbox.etcd import EtcdServer
from tests.faults.harness import report
from tests.paths import short_dir

from .test_fuzz_inputs import unit_names

MACHINE = "f" * 32
FAST = settings(deadline=None, suppress_health_check=list(HealthCheck))
STATUSES: Counter[str] = Counter()
JSON_HEADERS = {"Content-Type": "application/json"}


class ServedAPI:
    """An APIServer and its Registry on a loop in a thread; `call` runs a coroutine there."""

    def __init__(self, etcd: EtcdServer, sock_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-api", daemon=True)
        self.thread.start()
        self.prefix = f"/fuzz-{uuid.uuid4().hex[:12]}/"
        config = EtcdConfig(endpoints=etcd.endpoints, key_prefix=self.prefix, request_timeout=5.0)
        self.registry = Registry(config)
        self.server = APIServer(self.registry, MACHINE, token_limit=100)
        self.socket = str(sock_dir / "fleet.sock")

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> ServedAPI:
        async def start() -> None:
            await self.registry.connect()
            await self.server.start(self.socket)

        self.call(start())
        return self

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.stop()
            await self.registry.close()

        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def content(self) -> Snapshot:
        """Everything under the prefix, without the (global) revision."""
        snap = self.call(self.registry.snapshot())
        snap.revision = 0  # compared by content: the revision moves with every read
        return snap


@pytest.fixture(scope="module")
def served(etcd: EtcdServer) -> Iterator[ServedAPI]:
    # module-scoped, so not the per-test sock_dir fixture
    with short_dir() as sock_dir:
        api = ServedAPI(etcd, sock_dir)
        try:
            yield api.start()
        finally:
            api.stop()


def request(
    served: ServedAPI,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    from tests.api.api_helpers import raw

    status, _, data = raw(served.socket, method, path, body, headers or {})
    return status, data


def checked(status: int, data: bytes, what: str) -> dict[str, Any] | None:
    """Assert the answer is a success or fleet's error shape; return the error, if any."""
    STATUSES[f"{what} {status}"] += 1
    assert status < 500, (status, data)
    if status < 400:
        return None
    err = json.loads(data)["error"]
    assert set(err) == {"code", "message"} and err["code"] == status
    if status in (400, 409, 413, 415):
        assert isinstance(err["message"], str) and len(err["message"]) > 5, err
        assert "Traceback" not in err["message"]
    return err


# --- strategies ------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_sections = st.sampled_from(["Unit", "Service", "X-Fleet", "", "Unit]", "[Unit", "a\nb", "\x00"])
_keys = st.sampled_from(
    [
        "Description",
        "ExecStart",
        "MachineID",
        "Global",
        "Conflicts",
        "MachineMetadata",
        "MachineOf",
        "",
        "a=b",
        "X\n",
    ]
)
_values = st.one_of(
    st.sampled_from(["/bin/true", "true", "x\\", "a\nb", "", "role=web", "\x00", "%i"]),
    st.text(max_size=10),
)
option = st.one_of(
    st.fixed_dictionaries({"section": _sections, "name": _keys, "value": _values}),
    st.dictionaries(st.sampled_from(["section", "name", "value", "x"]), json_values, max_size=4),
    json_values,
)
_good_option = st.sampled_from(
    [
        {"section": "Service", "name": "ExecStart", "value": "/bin/true"},
        {"section": "Unit", "name": "Description", "value": "fuzz"},
        {"section": "X-Fleet", "name": "Global", "value": "true"},
        {"section": "X-Fleet", "name": "MachineMetadata", "value": "role=web"},
    ]
)
unit_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "desiredState": st.sampled_from(["inactive", "loaded", "launched"]),
            "options": st.lists(_good_option, min_size=1, max_size=3),
        }
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(unit_names, json_values),
            "desiredState": st.one_of(
                st.sampled_from(["inactive", "loaded", "launched", "LAUNCHED", "running", ""]),
                json_values,
            ),
            "options": st.one_of(st.lists(option, max_size=4), json_values),
            "currentState": json_values,
            "machineID": json_values,
        },
    ),
)
url_names = st.one_of(
    unit_names, st.sampled_from(["fuzz.service", "fuzz@.service", "fuzz@1.service"])
)


@settings(FAST, max_examples=1200)
@given(
    url_names, st.one_of(unit_bodies.map(lambda b: json.dumps(b).encode()), st.binary(max_size=64))
)
def test_put_unit_random_bodies(served: ServedAPI, name: str, body: bytes) -> None:
    before = served.content()
    status, data = request(
        served, "PUT", f"/fleet/v1/units/{quote(name, safe='')}", body, JSON_HEADERS
    )
    if checked(status, data, "PUT unit") is not None:
        assert served.content() == before, f"rejected PUT {name!r} {body!r} changed the registry"
    elif status == 201:  # created or replaced: it reads back under its name
        got, data = request(served, "GET", f"/fleet/v1/units/{quote(name, safe='')}")
        assert got == 200 and json.loads(data)["name"] == name


_patch_paths = st.one_of(
    st.sampled_from(
        [
            "/m1/metadata/role",
            f"/{MACHINE}/metadata/a.b-c_d",
            "/m1/metadata/",
            "//metadata/x",
            "/m1/metadata/a b",
            "/m1/metadata/a/b",
            "/../metadata/x",
            "/m1/meta/x",
            "",
            "/",
        ]
    ),
    st.text(max_size=24),
)
_patch_ops = st.one_of(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "", "ADD"]) | json_values,
            "path": _patch_paths | json_values,
        },
        optional={"value": st.one_of(json_values, st.fixed_dictionaries({"value": json_values}))},
    ),
    json_values,
)


@settings(FAST, max_examples=800)
@given(
    st.one_of(st.lists(_patch_ops, max_size=4), json_values).map(lambda b: json.dumps(b).encode())
    | st.binary(max_size=48)
)
def test_patch_machines_random_bodies(served: ServedAPI, body: bytes) -> None:
    before = served.content()
    status, data = request(served, "PATCH", "/fleet/v1/machines", body, JSON_HEADERS)
    if checked(status, data, "PATCH machines") is not None:
        assert served.content() == before, f"rejected PATCH {body!r} changed the registry"
    else:
        assert status == 204


_segments = st.one_of(
    st.sampled_from(
        [
            "fleet",
            "v1",
            "v1-alpha",
            "units",
            "state",
            "machines",
            "discovery",
            "x",
            "status",
            "journal",
            "metrics",
            "why",
            "unplaced",
            "",
            "..",
            ".",
            "%2F",
            "%00",
            "fuzz.service",
        ]
    ),
    st.text(max_size=8).map(lambda s: quote(s, safe="")),
)
_queries = st.dictionaries(
    st.sampled_from(["nextPageToken", "unitName", "machineID", "lines", "follow", "x", ""]),
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(["-1", "0", "1e9", "true", "yes", "%%%", "eyJ9", "99999999999999999999"]),
    ),
    max_size=3,
)


@settings(FAST, max_examples=1000)
@given(
    st.sampled_from(["GET", "DELETE", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"]),
    st.one_of(
        st.lists(_segments, min_size=1, max_size=5).map(lambda s: "/fleet/v1/" + "/".join(s)),
        st.lists(_segments, max_size=5).map(lambda s: "/" + "/".join(s)),
    ),
    _queries,
)
def test_random_paths_and_queries(
    served: ServedAPI, method: str, path: str, query: dict[str, str]
) -> None:
    if method == "POST" and "/x/" in path:
        return  # x/wait with a valid body waits by design; its bodies are checked elsewhere
    if method == "GET" and ("journal" in path or "events" in path):
        return  # a followed journal and the event stream run until the client leaves
    before = served.content()
    target = path + ("?" + urlencode(query) if query else "")
    status, data = request(
        served, method, target, b"{}" if method in ("PUT", "PATCH") else None, JSON_HEADERS
    )
    if method == "HEAD":
        STATUSES[f"HEAD {status}"] += 1
        assert status < 500
        return
    if checked(status, data, "random path") is not None:
        assert served.content() == before, f"rejected {method} {target} changed the registry"


def test_zz_report_api_fuzz() -> None:
    report(
        "fuzz API (answers by request kind and status)",
        ", ".join(f"{k}: {v}" for k, v in sorted(STATUSES.items())),
    )
    assert not any(k.endswith(" 500") for k in STATUSES)
