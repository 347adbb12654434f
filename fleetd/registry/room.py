"""What every room of the registry works over: the etcd adapter, the key layout, decoding.

The Registry (`registry.py`) is a façade over rooms — `jobs`, `membership`, `election`,
`reads`, `placement` — each a `Room` over the one EtcdClient and KeyLayout of its Registry.
Reading a stored document is the same in every room, so it is written here once: a value that
is not a valid document of its key (not JSON, wrong schema, naming another job or machine than
its key) is logged as `registry.corrupt_value` and read as absent, never raised — one bad key
must not stop the engine, an agent or a listing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from fleetd.model import ModelError
from fleetd.registry.etcd import EtcdClient
from fleetd.registry.fold import decode_value
from fleetd.registry.keys import KeyLayout
from fleetd.registry.kv import MAX_NESTED, Guarded, KeyValue, chunked

__all__ = ["IN_FLIGHT", "Room", "in_flight"]

log = structlog.get_logger(__name__)

D = TypeVar("D")
T = TypeVar("T")

# Round trips one call of a room keeps in flight at once. Placing 100,000 units is 1,000 round
# trips of nested txns: all at once, the last ones waited on etcd past the request timeout (1 s
# by default, as fleet's), and the engine stepped down for an etcd it took for unreachable.
IN_FLIGHT = 8


class Room:
    """One part of the registry, over the etcd adapter and key layout it shares with the rest."""

    def __init__(self, etcd: EtcdClient, keys: KeyLayout) -> None:
        self.etcd = etcd
        self.keys = keys

    def decode(self, kv: KeyValue) -> object | None:
        """The document at kv, or None (logged) when the stored value is corrupt."""
        try:
            return decode_value(self.keys, kv.key, kv.value)
        except ModelError as err:
            log.warning(
                "registry.corrupt_value", key=kv.key, revision=kv.mod_revision, error=str(err)
            )
            return None

    async def nested(self, writes: Sequence[Guarded], event: str) -> list[bool]:
        """Independent guarded writes, each a nested txn of its own (winning or losing on its
        guards alone), MAX_NESTED per round trip and IN_FLIGHT round trips at once; whether
        each won, in order (`event`: the debug line logged per call)."""
        if not writes:
            return []
        if len(writes) == 1:  # a plain transaction: no nesting to build or unpack
            res = await self.etcd.txn(writes[0].compare, writes[0].success)
            log.debug(event, changes=1, won=int(res.succeeded))
            return [res.succeeded]
        chunks = chunked(writes, MAX_NESTED)
        results = await in_flight([functools.partial(self.etcd.txns, c) for c in chunks])
        won = [r.succeeded for chunk in results for r in chunk]
        log.debug(event, changes=len(writes), won=sum(won))
        return won

    async def read(self, key: str, kind: type[D]) -> D | None:
        """The document at `key` if it is a `kind`: None when absent, corrupt or another kind."""
        _, kv = await self.etcd.get(key)
        doc = self.decode(kv) if kv else None
        return doc if isinstance(doc, kind) else None


async def in_flight(calls: Sequence[Callable[[], Awaitable[T]]], limit: int = IN_FLIGHT) -> list[T]:
    """Each call's result, in order, with at most `limit` of them running at once."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))
