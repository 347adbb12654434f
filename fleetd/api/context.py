"""What the API's resources are handed: `Context`, the registry and its shared reads (every
resource), and `Peers`, this machine and the way to the others (status and journal only).

The server builds both and passes them to each resource's `routes`; resources never import the
server (an import-linter contract), so the API has no import cycle and a resource shows in its
signature which part of the daemon it touches. The server's own concerns (request counters, its
version, listeners) stay in `fleetd.api.app` and `fleetd.api.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from fleetd.api.pagination import PageToken, TokenError, token_from_query
from fleetd.api.schema import units_of
from fleetd.api.serialization import Fail
from fleetd.registry import Registry, Snapshot, WatchCompacted

__all__ = ["Context", "Inspector", "Peers", "SharedSnapshots"]

_LISTINGS_KEPT = 4  # recent snapshots kept for the next pages of listings


class Inspector(Protocol):
    """This machine's systemd, as far as the API needs it (SystemdManager fits)."""

    def journal(self, name: str, *, lines: int | None = ..., follow: bool = ...) -> Any: ...

    async def status(self, name: str) -> str: ...


class SharedSnapshots:
    """Concurrent readers share etcd reads, without ever reading stale.

    A reader gets a snapshot whose read *started after it asked*, so it sees every write
    acknowledged before its request; all readers that ask while a read is running share the
    next read. A burst of N list requests costs two reads of etcd, not N.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.reads = 0
        self._waiting: asyncio.Future[Snapshot] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def get(self) -> Snapshot:
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            self._waiting.add_done_callback(_retrieve)
        waiting = self._waiting
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        return await asyncio.shield(waiting)

    async def _read(self) -> None:
        try:
            while self._waiting is not None:
                waiting, self._waiting = self._waiting, None
                try:
                    snapshot = await self.registry.snapshot()
                except Exception as err:  # handed to the readers, who answer 503/500
                    waiting.set_exception(err)
                else:
                    waiting.set_result(snapshot)
                self.reads += 1
        finally:
            self._reader = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._waiting is not None and not self._waiting.done():
            self._waiting.cancel()


def _retrieve(future: asyncio.Future[Snapshot]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "never retrieved" warning when every reader left


@dataclass
class Context:
    """The registry, and its reads shared by every request of this fleetd: fresh snapshots
    (`snapshot`), the ones listings are paged from (`listing`), units as JSON per revision."""

    registry: Registry
    token_limit: int
    snapshots: SharedSnapshots = field(init=False)
    _units: tuple[int, list[dict[str, Any]]] = (-1, [])
    _unit_cache: dict[str, tuple[tuple[object, ...], dict[str, Any] | None]] = field(
        default_factory=dict
    )
    _listings: OrderedDict[int, Snapshot] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.snapshots = SharedSnapshots(self.registry)

    async def snapshot(self) -> Snapshot:
        """The registry at one revision, read after this call began (shared with others)."""
        snapshot = await self.snapshots.get()
        self._listings[snapshot.revision] = snapshot
        while len(self._listings) > _LISTINGS_KEPT:
            self._listings.popitem(last=False)
        return snapshot

    async def listing(self, tok: PageToken) -> Snapshot:
        """The snapshot a page is cut from: a fresh one for a first page; for the next pages,
        the one the first page was cut from (its revision is in the token), kept from then or
        read again at that revision; a fresh one if etcd compacted it meanwhile."""
        if tok.revision:
            kept = self._listings.get(tok.revision)
            if kept is not None:
                return kept
            with contextlib.suppress(WatchCompacted):
                return await self.registry.snapshot(tok.revision)
        return await self.snapshot()

    def units_of(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        """Every unit as JSON, computed once per revision; a unit whose job, content,
        placement and state are the same objects as at the last revision is not computed
        again (snapshots share the documents of unchanged keys)."""
        if self._units[0] != snapshot.revision:
            self._units = (snapshot.revision, units_of(snapshot, self._unit_cache))
        return self._units[1]

    def page_token(self, request: web.Request) -> PageToken:
        try:
            return token_from_query(request.query.getall("nextPageToken", []), self.token_limit)
        except TokenError as err:
            raise Fail(400, str(err)) from None

    async def close(self) -> None:
        await self.snapshots.close()


@dataclass
class Peers:
    """Who this machine is, its systemd, and how to reach the other machines' peer listeners:
    what a unit's status and journal need, answered here or forwarded to the unit's machine."""

    machine_id: str
    inspector: Inspector | None
    # a machine's peer listener, from its ID and public IP (as the registry has them)
    peer_url: Callable[[str, str], str | None] | None
    peer_ssl: ssl.SSLContext | None = None  # the client side of the peer listeners' mTLS
    session: aiohttp.ClientSession | None = None

    def peer_tls(self) -> dict[str, Any]:
        """The TLS argument of a request to another machine's peer listener."""
        return {"ssl": self.peer_ssl} if self.peer_ssl is not None else {}

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
