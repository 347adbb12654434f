"""fleetd's long-lived parts (the engine, an agent) run in the test's own loop, for a block.

Leaving the block cancels the task and waits for its end, as a daemon's shutdown does, so its
`finally` clauses (lease revocation, watch cancellation) have run before the next step; an
exception the task died of is raised there, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fleetd.engine import Engine
from fleetd.registry import Registry


async def cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended (in process, what kill -9 is to a daemon)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """`work` runs as a task while the block runs; the task is the block's value."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        await cancelled(task)


@contextlib.asynccontextmanager
async def engine_running(
    registry: Registry, machine_id: str, lease_ttl: int = 5
) -> AsyncIterator[Engine]:
    """An Engine of `machine_id` on `registry`, campaigning and planning while the block runs."""
    engine = Engine(registry, machine_id, lease_ttl=lease_ttl)
    async with running(engine.run()):
        yield engine
