"""What every room of the registry works over: the etcd adapter, the key layout, decoding.

The Registry (`registry.py`) is a façade over rooms — `jobs`, `membership`, `election`,
`reads`, `placement` — each a `Room` over the one EtcdClient and KeyLayout of its Registry.
Reading a stored document is the same in every room, so it is written here once: a value that
is not a valid document of its key (not JSON, wrong schema, naming another job or machine than
its key) is logged as `registry.corrupt_value` and read as absent, never raised — one bad key
must not stop the engine, an agent or a listing.
"""

from __future__ import annotations

from typing import TypeVar

import structlog

from fleetd.model import ModelError
from fleetd.registry.etcd import EtcdClient
from fleetd.registry.fold import decode_value
from fleetd.registry.keys import KeyLayout
from fleetd.registry.kv import KeyValue

__all__ = ["Room"]

log = structlog.get_logger(__name__)

D = TypeVar("D")


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

    async def read(self, key: str, kind: type[D]) -> D | None:
        """The document at `key` if it is a `kind`: None when absent, corrupt or another kind."""
        _, kv = await self.etcd.get(key)
        doc = self.decode(kv) if kv else None
        return doc if isinstance(doc, kind) else None
