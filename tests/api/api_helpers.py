"""Helpers of the API tests: raw HTTP over the unix socket, machines as leases, an engine
(`engine_running`, from tests/running.py, shared with the other shell tests)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from fleetd.model import Machine, UnitState
from fleetd.registry import Lease, Registry
from tests.running import engine_running as engine_running  # the API tests import it here

HELLO = [
    {"section": "Unit", "name": "Description", "value": "Hello World"},
    {
        "section": "Service",
        "name": "ExecStart",
        "value": "/bin/sh -c 'while true; do echo Hello World; sleep 1; done'",
    },
]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def raw(
    sock: str,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request over the unix socket: (status, headers, body)."""
    conn = UnixHTTP(sock)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def put_json(sock: str, path: str, doc: Any) -> tuple[int, dict[str, str], bytes]:
    return raw(sock, "PUT", path, json.dumps(doc), {"Content-Type": "application/json"})


def error_of(body: bytes) -> tuple[int, str]:
    err = json.loads(body)["error"]
    return err["code"], err["message"]


async def machine(registry: Registry, mid: str, ip: str = "", **metadata: str) -> Lease:
    return await registry.register_machine(Machine(mid, ip, metadata), 10)


async def publish(
    registry: Registry, lease: Lease, name: str, mid: str, unit_hash: str, active: str = "active"
) -> None:
    """Publish a UnitState as the machine's agent would (the agent path itself is covered by
    the end-to-end tests)."""
    sub = {"active": "running", "inactive": "dead", "failed": "failed"}.get(active, active)
    await registry.publish_state(UnitState(name, mid, unit_hash, "loaded", active, sub), lease)
