"""Waiting with a deadline: for the cluster to reach a state (list, then follow the watch), and
for a write to get through while etcd is temporarily unavailable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fleetd.errors import TemporaryError
from fleetd.registry import Changed, Event, KeyKind, Registry, Removed, Snapshot
from fleetd.registry.watch import Backoff

DEADLINE = 20.0  # seconds: a bound against hanging, never an expectation of speed
T = TypeVar("T")


async def until(
    registry: Registry, predicate: Callable[[Snapshot], bool], deadline: float = DEADLINE
) -> Snapshot:
    """The first view of the registry (a snapshot, then each watch event) satisfying predicate."""
    return await asyncio.wait_for(registry.wait_for(predicate), deadline)


def put(kind: KeyKind, ident: object = None) -> Callable[[Event], bool]:
    """A predicate: the event writes a document of `kind` (at `ident`, if given)."""
    return lambda e: (
        isinstance(e, Changed) and e.kind is kind and (ident is None or e.ident == ident)
    )


def gone(kind: KeyKind, ident: object = None) -> Callable[[Event], bool]:
    """A predicate: the event removes a key of `kind` (at `ident`, if given)."""
    return lambda e: (
        isinstance(e, Removed) and e.kind is kind and (ident is None or e.ident == ident)
    )


async def retrying(make: Callable[[], Awaitable[T]], deadline: float = DEADLINE) -> T:
    """Run an operation, retrying while etcd is (temporarily) unavailable, with a deadline.

    This retries a failed write with capped backoff, as any client must (a restarted etcd, a
    new raft election, a gRPC channel still in its reconnect backoff); it does not poll state.
    A permanent error is raised at once.
    """

    async def attempt() -> T:
        backoff = Backoff(first=0.05, cap=0.5)
        while True:
            try:
                return await make()
            except TemporaryError:
                await backoff.wait()

    return await asyncio.wait_for(attempt(), deadline)
