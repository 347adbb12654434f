"""`/state` and `/state/{name}` (`api/state.go`): what systemd reports of each unit, per machine."""

from __future__ import annotations

from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.pagination import paged
from fleetd.api.schema import state_json, states_of
from fleetd.api.serialization import Fail, json_response

__all__ = ["routes"]


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
