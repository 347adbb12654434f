"""Waiting for the cluster to reach a state: list, then follow the watch, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fleetd.registry import Registry, Snapshot

DEADLINE = 20.0  # seconds: a bound against hanging, never an expectation of speed


async def until(
    registry: Registry, predicate: Callable[[Snapshot], bool], deadline: float = DEADLINE
) -> Snapshot:
    """The first view of the registry (a snapshot, then each watch event) satisfying predicate."""
    return await asyncio.wait_for(registry.wait_for(predicate), deadline)
