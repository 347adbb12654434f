"""`POST /fleet/v1/x/wait` (docs/api.md): stream the units reaching a state as the registry's
watch reports it, what blocking fleetctl commands wait on.

What a unit's line is — reached, failed in systemd's words, still pending and why — is decided by
the pure `fleetd/reconcile/waiting.py`; `_Judge` keeps which units are still waited for and when
a settling service has been active long enough; the handler only follows the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.serialization import Fail, body_flag, body_timeout, read_json

# the wait handler keeps the name it had in extensions.py: its body moved here unchanged
from fleetd.api.streams import stream_response as _stream_response
from fleetd.engine import plan_for
from fleetd.model import JobState, ModelError
from fleetd.reconcile.waiting import (
    current_state,
    failure,
    is_global,
    pending_reason,
    reached,
    settles,
    unschedulable,
)
from fleetd.registry import (
    UNITS_SNAPSHOT_MAX,
    Changed,
    ClusterView,
    KeyKind,
    Update,
)

__all__ = ["routes"]


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def wait(request: web.Request) -> web.StreamResponse:
        names, state, active, timeout, settle = _wait_request(await read_json(request))
        # a few units: their keys only (the watch brings the rest of what they need)
        few = len(names) <= UNITS_SNAPSHOT_MAX
        snapshot = await (ctx.registry.units_snapshot(names) if few else ctx.snapshot())
        resp = await _stream_response(request, "application/x-ndjson")
        judge = _Judge(ClusterView(snapshot), names, state, active, settle)
        loop = asyncio.get_running_loop()

        async def write(lines: list[dict[str, Any]]) -> None:
            for line in lines:
                await resp.write(json.dumps(line).encode() + b"\n")

        async def unschedulable_now() -> None:
            """Units no machine of the cluster can take end the wait now: the planner on the
            waited units' view says so first (cheap), the whole registry confirms it."""
            unplaced = judge.unplaced()
            if not unplaced:
                return
            reasons = plan_for(judge.view.freeze(copy=False), {}).unplaced
            suspects = unplaced & set(reasons)
            if not suspects:
                return
            if few:  # the view holds the waited units only: the whole registry decides
                reasons = plan_for(await ctx.snapshot(), {}).unplaced
            await write(judge.unschedulable({n: reasons[n] for n in suspects if n in reasons}))

        await write(judge.judge(names, loop.time()))
        await unschedulable_now()
        if judge.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    updates = ctx.registry.follow(start=snapshot, view=judge.view)
                    async with contextlib.aclosing(
                        _with_deadlines(updates, judge.next_deadline)
                    ) as feed:
                        async for update in feed:
                            if update is None:  # a settling unit's moment is over
                                await write(judge.judge(judge.due(loop.time()), loop.time()))
                            elif update.events:
                                await write(judge.judge(update.touched, loop.time()))
                                if _membership(update, judge.pending):
                                    await unschedulable_now()
                            if not judge.pending:
                                break
        snapshot = judge.view.freeze(copy=False)
        plan: dict[str, str] | None = None
        whole = await ctx.snapshot() if judge.pending and few else snapshot  # the planner's view

        def unplaced() -> dict[str, str]:
            nonlocal plan
            if plan is None:
                plan = dict(plan_for(whole, {}).unplaced)
            return plan

        final = {
            "done": True,
            "pending": [
                {
                    "name": name,
                    "currentState": (
                        current_state(snapshot, snapshot.jobs[name])
                        if name in snapshot.jobs
                        else None
                    ),
                    "reason": pending_reason(snapshot, name, unplaced),
                }
                for name in judge.pending
            ],
        }
        await resp.write(json.dumps(final).encode() + b"\n")
        await resp.write_eof()
        return resp

    return [web.post(f"{prefix}/x/wait", wait)]


class _Judge:
    """The units a wait still waits for, judged against the view after every change."""

    def __init__(
        self, view: ClusterView, names: list[str], state: JobState, active: bool, settle: float
    ) -> None:
        self.view, self.state, self.active, self.settle = view, state, active, settle
        self.pending: dict[str, None] = dict.fromkeys(names)
        self.settling: dict[str, float] = {}  # unit -> when it has been active long enough
        # active before the wait began: nothing is starting, there is nothing to settle
        self.was_active = {n for n in names if reached(view, n, state, active) is not None}

    def judge(self, candidates: Iterable[str] | None, now: float) -> list[dict[str, Any]]:
        """The lines of the pending units among `candidates` (None: all) that reached the
        state (and stayed active `settle` seconds, for a service that may die at once) or can
        no longer reach it."""
        lines = []
        for name in list(self.pending) if candidates is None else candidates:
            if name not in self.pending:
                continue
            line = failure(self.view, name, self.state)
            if line is None:
                line = reached(self.view, name, self.state, self.active)
                if line is None:
                    self.settling.pop(name, None)  # not (or no longer) there
                    continue
                if self._must_settle(name, line):
                    if now < self.settling.setdefault(name, now + self.settle):
                        continue
            self.settling.pop(name, None)
            del self.pending[name]
            lines.append(line)
        return lines

    def _must_settle(self, name: str, line: dict[str, Any]) -> bool:
        return (
            self.active
            and self.settle > 0
            and not line.get("global")
            and name not in self.was_active
            and settles(self.view, name)
        )

    def next_deadline(self) -> float | None:
        return min(self.settling.values(), default=None)

    def due(self, now: float) -> list[str]:
        return sorted(n for n, t in self.settling.items() if t <= now)

    def unplaced(self) -> set[str]:
        """Pending units that want a machine and have none."""
        if self.state is JobState.INACTIVE:
            return set()
        return {
            n for n in self.pending
            if (job := self.view.jobs.get(n)) is not None
            and job.desired is not JobState.INACTIVE
            and n not in self.view.placements
            and not is_global(self.view, job)
        }

    def unschedulable(self, reasons: dict[str, str]) -> list[dict[str, Any]]:
        lines = []
        for name in sorted(reasons):
            if name in self.pending and name not in self.view.placements:
                del self.pending[name]
                lines.append(unschedulable(self.view, name, reasons[name]))
        return lines


def _membership(update: Update, pending: dict[str, None]) -> bool:
    """Whether `update` may change where the pending units can go: machines came, went or
    changed metadata, or a pending unit's job changed."""
    return update.everything or update.machines or any(
        isinstance(e, Changed) and e.kind is KeyKind.JOB and e.ident in pending
        for e in update.events
    )


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
            done, _ = await asyncio.wait({getter, reader}, timeout=delay,
                                         return_when=asyncio.FIRST_COMPLETED)
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


def _wait_request(body: object) -> tuple[list[str], JobState, bool, float | None, float]:
    if not isinstance(body, dict):
        raise Fail(400, "unable to decode body: expected a JSON object")
    names = body.get("units")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise Fail(400, "units must be a non-empty list of unit names")
    try:
        state = JobState.parse(body.get("state"))
    except ModelError:
        raise Fail(
            400, f"invalid state {body.get('state')!r}: expected inactive, loaded or launched"
        ) from None
    active, timeout = body_flag(body, "active"), body_timeout(body)
    settle = body.get("settle", 0)
    if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle <= 600:
        raise Fail(400, "settle must be a number of seconds between 0 and 600")
    return list(dict.fromkeys(names)), state, active, timeout, float(settle)
