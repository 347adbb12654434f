"""Beginning a rollout, shared by `x/rollouts` and a unit's PUT of a new version of a launched
Global unit (which rolls out instead of replacing every machine's unit at once)."""

from __future__ import annotations

import time
import uuid

import structlog

from fleetd.api.context import Context
from fleetd.api.serialization import Fail
from fleetd.model import Rollout, RolloutAction
from fleetd.reconcile.rollout import RolloutRefused, begin, covered_units
from fleetd.registry import JobNotFound, RolloutInProgress
from fleetd.unit import UnitFile

__all__ = ["begin_rollout"]

log = structlog.get_logger(__name__)


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
