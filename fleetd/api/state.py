"""`/state` and `/state/{name}` (`api/state.go`): what systemd reports of each unit, per machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from fleetd.api.pagination import paged
from fleetd.api.serialization import Fail, json_response
from fleetd.model import UnitState
from fleetd.registry import Snapshot

if TYPE_CHECKING:
    from fleetd.api.server import Context

__all__ = ["state_json", "states_of"]


def state_json(state: UnitState) -> dict[str, Any]:
    return {
        "name": state.name,
        "hash": state.hash,
        "machineID": state.machine_id,
        "systemdLoadState": state.load,
        "systemdActiveState": state.active,
        "systemdSubState": state.sub,
    }


def states_of(
    snapshot: Snapshot, *, unit_name: str | None = None, machine_id: str | None = None
) -> list[dict[str, Any]]:
    """One state per (unit, machine), sorted by unit name then machine ID, filtered."""
    return [
        state_json(snapshot.states[key])
        for key in sorted(snapshot.states)
        if (unit_name is None or key[0] == unit_name)
        and (machine_id is None or key[1] == machine_id)
    ]


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def collection(request: web.Request) -> web.Response:
        if request.method != "GET":
            raise Fail(405, "only GET supported against this resource")
        tok = ctx.page_token(request)
        snapshot = await ctx.listing(tok)
        states = states_of(
            snapshot,
            unit_name=request.query.get("unitName") or None,
            machine_id=request.query.get("machineID") or None,
        )
        return json_response(paged("states", states, tok, snapshot.revision))

    async def item(request: web.Request) -> web.Response:
        if request.method != "GET":
            raise Fail(405, "only GET supported against this resource")
        name = request.match_info["name"]
        snapshot = await ctx.registry.units_snapshot([name])  # this unit's keys only
        machine_id = snapshot.placements.get(name)
        if machine_id is not None and (name, machine_id) in snapshot.states:
            return json_response(state_json(snapshot.states[(name, machine_id)]))
        states = states_of(snapshot, unit_name=name)
        if not states:
            raise Fail(404, "unit state does not exist")
        return json_response(states[0])

    return [
        web.route("*", f"{prefix}/state", collection),
        web.route("*", f"{prefix}/state/{{name}}", item),
    ]
