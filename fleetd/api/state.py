"""`/state` and `/state/{name}` (`api/state.go`): what systemd reports of each unit, per machine
(which one state of a unit `/state/{name}` shows: `fleetd/reconcile/inspection.py`)."""

from __future__ import annotations

from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.pagination import paged
from fleetd.api.schema import state_json, states_of
from fleetd.api.serialization import Fail, granted, json_response
from fleetd.reconcile.inspection import shown_state

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
        return json_response(state_json(granted(shown_state(snapshot, name))))

    return [
        web.route("*", f"{prefix}/state", collection),
        web.route("*", f"{prefix}/state/{{name}}", item),
    ]
