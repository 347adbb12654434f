"""What the rooms say to etcd, without the client library: reads, guards, writes, results.

`registry/etcd.py` turns these into the library's requests and its answers back into these, so
the rooms build their transactions from plain values and never see etcd3aio or gRPC. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from fleetd.registry.fold import Change

__all__ = [
    "MAX_NESTED",
    "Cmp",
    "Delete",
    "Get",
    "Guarded",
    "KeyValue",
    "Op",
    "Put",
    "TxnResult",
    "WatchBatch",
    "chunked",
]

MAX_NESTED = 100  # nested transactions in one `txns` (etcd refuses over 128 ops per branch)

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` cut in order into pieces of at most `size`: the requests of one etcd txn each
    (etcd takes at most 128 operations per transaction)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Cmp:
    """A txn guard: `target` of `key` (or of every key under it when `prefix`) `op` `operand`.

    target: "version" (0 = absent), "create" (create revision), "mod" (mod revision), "value".
    """

    key: str
    target: Literal["version", "create", "mod", "value"]
    op: Literal["==", "!=", "<", ">"]
    operand: int | bytes
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False
    revision: int = 0  # read as at this revision (0: the current one)


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    gets: tuple[tuple[KeyValue, ...], ...]  # one tuple per Get op of the branch that ran


@dataclass(frozen=True, slots=True)
class Guarded:
    """One guarded write of `EtcdClient.txns`: `success` runs if every guard holds, else
    `failure` (reads only, to learn why)."""

    compare: tuple[Cmp, ...]
    success: tuple[Put | Delete, ...]
    failure: tuple[Get, ...] = ()


@dataclass(frozen=True, slots=True)
class WatchBatch:
    revision: int  # the store revision the server reported with this batch
    changes: tuple[Change, ...]
