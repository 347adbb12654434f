"""API fixtures: an APIServer on a unix socket (real HTTP, real etcd), and our client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetd.api.client import Client
from fleetd.api.server import APIServer
from fleetd.registry import Registry

MACHINE = "a" * 32


@pytest.fixture
async def api(registry: Registry, sock_dir: Path) -> AsyncIterator[APIServer]:
    server = APIServer(registry, MACHINE, token_limit=100, version="9.9.9")
    await server.start(sock_dir / "fleet.sock")
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def client(api: APIServer) -> Client:
    return Client(f"unix://{api.unix_path}", timeout=10.0)
