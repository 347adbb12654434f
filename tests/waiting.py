"""Waiting for the cluster to reach a state: list, then follow the watch, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fleetd.registry import Changed, Event, KeyKind, Registry, Removed, Snapshot

DEADLINE = 20.0  # seconds: a bound against hanging, never an expectation of speed


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
