"""What the rollout and drain resources share: beginning a rollout (`x/rollouts`, and a unit's
PUT of a new version of a launched Global unit, which rolls out instead of replacing every
machine's unit at once), and streaming a document as it changes until it is over."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.serialization import Fail
from fleetd.api.streams import endless, stream_response
from fleetd.model import Rollout, RolloutAction
from fleetd.reconcile.rollout import RolloutRefused, begin, covered_units
from fleetd.registry import ClusterView, JobNotFound, KeyKind, RolloutInProgress, Snapshot
from fleetd.unit import UnitFile

__all__ = ["begin_rollout", "follow_document"]

log = structlog.get_logger(__name__)

D = TypeVar("D")


async def begin_rollout(
    ctx: Context, name: str, action: RolloutAction, unit: UnitFile | None
) -> Rollout | None:
    """Begin the rollout of `unit` (None: a restart) over `name` from a fresh snapshot; None
    when nothing runs (an update then replaces the jobs at once). Raises Fail with the
    reason when it cannot begin."""
    snapshot = await ctx.snapshot()
    try:
        rollout = begin(snapshot, name, action, uuid.uuid4().hex, time.time(), unit)
    except RolloutRefused as err:
        raise Fail(409, str(err)) from None
    try:
        if rollout is None:
            for unit_name in covered_units(snapshot, name):
                job = snapshot.jobs[unit_name]
                await ctx.registry.replace_job(unit_name, unit, job.unit_hash)
            log.info("api.rollout_unneeded", unit=name, reason="no instance runs: replaced")
            return None
        await ctx.registry.begin_rollout(rollout, unit)
    except RolloutInProgress as err:
        raise Fail(409, str(err)) from None
    except JobNotFound as err:
        raise Fail(404, str(err)) from None
    log.info(
        "api.rollout_begun",
        unit=name,
        rollout=rollout.id,
        action=str(action),
        targets=len(rollout.targets),
        progress=rollout.progress,
    )
    return rollout


async def follow_document(
    ctx: Context,
    request: web.Request,
    snapshot: Snapshot,
    kind: KeyKind,
    read: Callable[[Snapshot | ClusterView], D | None],
    to_json: Callable[[D], dict[str, Any]],
    over: Callable[[D], bool],
) -> web.StreamResponse:
    """Stream the document `read` finds (a rollout, a cordon) as newline-delimited JSON: as it
    is in `snapshot`, then again each time a watch event of `kind` changes it, until it is
    `over` or gone (driven by the registry's watch, no polling)."""
    current = read(snapshot)
    assert current is not None
    resp = await stream_response(request, "application/x-ndjson")
    await resp.write(json.dumps(to_json(current)).encode() + b"\n")
    if not over(current):
        view = ClusterView(snapshot)
        with endless(request):
            updates = ctx.registry.follow(start=snapshot, view=view)
            async with contextlib.aclosing(updates):
                async for update in updates:
                    if not any(getattr(e, "kind", kind) is kind for e in update.events):
                        continue
                    now = read(view)
                    if now is None:
                        break  # gone: nothing more to say
                    if now == current:
                        continue
                    current = now
                    await resp.write(json.dumps(to_json(current)).encode() + b"\n")
                    if over(current):
                        break
    await resp.write_eof()
    return resp
