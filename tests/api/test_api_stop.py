"""Stopping the API while a client keeps a stream open: fleetd must not wait for the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleetd.api.server import APIServer
from fleetd.registry import Registry

MACHINE = "a" * 32


async def test_stop_does_not_wait_for_an_open_event_stream(
    registry: Registry, sock_dir: Path
) -> None:
    server = APIServer(registry, MACHINE)
    path = sock_dir / "fleet.sock"
    await server.start(path)
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(b"GET /fleet/v1/x/events HTTP/1.1\r\nHost: fleet\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 200"), status
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # headers; the stream is open
        # the stream's client never leaves: stop ends the stream (its handler is cancelled)
        # instead of waiting for the client, which would hold fleetd's exit
        await asyncio.wait_for(server.stop(), 10)
        assert await asyncio.wait_for(reader.read(), 10) is not None  # closed by the server
    finally:
        writer.close()
