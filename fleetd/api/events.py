"""`GET /fleet/v1/x/events`: the registry's changes, pushed as newline-delimited JSON.

A reader gets what it needs to keep a live view of the cluster without ever listing again:

- first `{"type":"snapshot","revision","units":[Unit],"states":[UnitState],"machines":[Machine]}`
  (the shapes of `/units`, `/state` and `/machines`; each Unit also has its content's `hash`);
- then, for each registry change that shows in those views,
  `{"type":"units","revision","units":[{"name","unit":Unit|null,"states":[UnitState]}]}` (every
  unit the change touches, as it is now: `unit` null once destroyed) or
  `{"type":"machines","revision","machines":[Machine]}` (the whole, short, machine list) or
  `{"type":"rollouts","revision","rollouts":[Rollout]}` (every rollout kept, as `x/rollouts`
  shows them; the snapshot line has them too);
- a new `snapshot` line after a compaction made the watch resync.

Driven by the registry's watch (a snapshot, then its events; no polling). It runs until the
client goes away.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.schema import machines_of, states_of, unit_json, units_of
from fleetd.api.streams import endless
from fleetd.reconcile.rollout_request import rollout_json
from fleetd.registry import ClusterView, KeyKind, Snapshot, Update

__all__ = ["change_lines", "routes", "snapshot_line"]


# --- pure ------------------------------------------------------------------------------------
def _with_hash(snapshot: Snapshot, unit: dict[str, Any] | None) -> dict[str, Any] | None:
    if unit is not None:
        unit["hash"] = snapshot.jobs[unit["name"]].unit_hash
    return unit


def snapshot_line(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "type": "snapshot",
        "revision": snapshot.revision,
        "units": [_with_hash(snapshot, dict(u)) for u in units_of(snapshot)],
        "states": states_of(snapshot),
        "machines": machines_of(snapshot),
        "rollouts": _rollouts(snapshot),
    }


def _rollouts(view: Snapshot | ClusterView) -> list[dict[str, Any]]:
    return [rollout_json(view.rollouts[name]) for name in sorted(view.rollouts)]


def _unit_entry(snapshot: Snapshot, name: str) -> dict[str, Any]:
    job = snapshot.jobs.get(name)
    unit = _with_hash(snapshot, unit_json(snapshot, job)) if job is not None else None
    return {"name": name, "unit": unit, "states": states_of(snapshot, unit_name=name)}


def change_lines(update: Update) -> list[dict[str, Any]]:
    """The lines that tell a reader how to get to `update.view` from the view before it."""
    after = update.view
    if update.everything:
        return [snapshot_line(after.freeze(copy=False))]
    lines = []
    if update.machines:
        machines = machines_of(after)
        lines.append({"type": "machines", "revision": after.revision, "machines": machines})
    if update.units:
        lines.append({
            "type": "units",
            "revision": after.revision,
            "units": [_unit_entry(after, name) for name in sorted(update.units)],
        })  # fmt: skip
    if any(getattr(e, "kind", None) is KeyKind.ROLLOUT for e in update.events):
        lines.append({"type": "rollouts", "revision": after.revision,
                      "rollouts": _rollouts(after)})  # fmt: skip
    return lines


# --- handler ---------------------------------------------------------------------------------
def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def events(request: web.Request) -> web.StreamResponse:
        with endless(request):
            return await follow(request)

    async def follow(request: web.Request) -> web.StreamResponse:
        snapshot = await ctx.snapshot()
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/x-ndjson"
        resp.charset = "utf-8"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(_encode(snapshot_line(snapshot)))
        async with contextlib.aclosing(ctx.registry.follow(start=snapshot)) as updates:
            async for update in updates:
                for line in change_lines(update) if update.events else ():
                    await resp.write(_encode(line))
        return resp  # pragma: no cover - the watch ends only when the client leaves

    return [web.get(f"{prefix}/x/events", events)]


def _encode(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"
