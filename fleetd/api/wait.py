"""`POST /fleet/v1/x/wait` (docs/api.md): stream the units reaching a state as the registry's
watch reports it, what blocking fleetctl commands wait on.

What a wait asks, which units it still waits for and each line it writes — reached, failed in
systemd's words, unschedulable, still pending and why — are decided by the pure
`fleetd/reconcile/wait_progress.py` (on `fleetd/reconcile/waiting.py`); the handler follows the
watch, sleeps until a settling unit's deadline, asks the engine's planner about units without
a machine, and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.serialization import granted, read_json

# the wait handler keeps the name it had in extensions.py: its body moved here unchanged
from fleetd.api.streams import stream_response as _stream_response
from fleetd.reconcile.engine import plan_for
from fleetd.reconcile.wait_progress import WaitProgress, read_wait
from fleetd.registry import ClusterView, Update

__all__ = ["routes"]


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def wait(request: web.Request) -> web.StreamResponse:
        ask = granted(read_wait(await read_json(request)))
        # the waited units' keys only, however many (the watch brings the rest they need): a
        # wait costs what it waits for, not what the cluster holds
        snapshot = await ctx.registry.units_snapshot(ask.units)
        resp = await _stream_response(request, "application/x-ndjson")
        view = ClusterView(snapshot)  # kept current by the follower
        progress = WaitProgress(view, ask)
        specs: dict[str, Any] = {}  # the planner's specs of the view's jobs, kept between plans
        loop = asyncio.get_running_loop()

        async def write(lines: list[dict[str, Any]]) -> None:
            """The lines of one step in one chunk: a bulk start's thousand lines are a few
            writes (and reads on the client's side), not one each."""
            if lines:
                await resp.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))

        async def unschedulable_now() -> None:
            """Units no machine of the cluster can take end the wait now: the planner on the
            waited units' view says so first (cheap), the whole registry confirms it."""
            unplaced = progress.unplaced()
            if not unplaced:
                return
            reasons = plan_for(view.freeze(copy=False), specs).unplaced
            suspects = unplaced & set(reasons)
            if not suspects:
                return
            # the view holds the waited units only: the whole registry decides
            reasons = plan_for(await ctx.snapshot(), {}).unplaced
            await write(progress.unschedulable({n: reasons[n] for n in suspects if n in reasons}))

        await write(progress.judge(ask.units, loop.time()))
        await unschedulable_now()
        if progress.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ask.timeout):
                    updates = ctx.registry.follow(start=snapshot, view=view)
                    async with contextlib.aclosing(
                        _with_deadlines(updates, progress.next_deadline)
                    ) as feed:
                        async for update in feed:
                            if update is None:  # a settling unit's moment is over
                                await write(progress.judge(progress.due(loop.time()), loop.time()))
                            elif update.events:
                                await write(progress.judge(update.touched, loop.time()))
                                if progress.placement_may_change(update):
                                    await unschedulable_now()
                            if not progress.pending:
                                break
        plan: dict[str, str] | None = None
        # the planner's view: the whole registry (the wait's view holds its units only)
        whole = await ctx.snapshot() if progress.pending else view.freeze(copy=False)

        def unplaced() -> dict[str, str]:
            nonlocal plan
            if plan is None:
                plan = dict(plan_for(whole, {}).unplaced)
            return plan

        final = progress.final(unplaced)
        await resp.write(json.dumps(final).encode() + b"\n")
        await resp.write_eof()
        return resp

    return [web.post(f"{prefix}/x/wait", wait)]


async def _with_deadlines(
    updates: AsyncIterator[Update], deadline: Callable[[], float | None]
) -> AsyncIterator[Update | None]:
    """The updates, and None whenever `deadline()` (a loop time) passes before the next one.

    The watch is read by a task of its own so that a deadline never cancels a read half-way.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Update] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        async for update in updates:
            await queue.put(update)

    reader = asyncio.create_task(pump(), name="wait-watch")
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            when = deadline()
            delay = None if when is None else max(0.0, when - loop.time())
            done, _ = await asyncio.wait(
                {getter, reader}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            if reader in done:
                reader.result()  # the watch failed: its error ends the wait
                return
            yield None
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
