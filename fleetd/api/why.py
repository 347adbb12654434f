"""`GET /fleet/v1/x/why/{name}` and `GET /fleet/v1/x/unplaced` (docs/api.md): why a unit runs
where it does or nowhere, and the reason of every unit that wants a machine and has none.

Both read the whole registry at one revision (the planner needs every job and machine) and
hand it to the pure `fleetd/reconcile/why.py`; nothing is written.
"""

from __future__ import annotations

from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.serialization import granted, json_response
from fleetd.reconcile.why import explain, read_name, unplaced_reasons

__all__ = ["routes"]


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def why(request: web.Request) -> web.Response:
        name = granted(read_name(request.match_info["name"]))
        explanation = granted(explain(await ctx.snapshot(), name))
        return json_response(explanation.to_dict())

    async def unplaced(request: web.Request) -> web.Response:
        return json_response({"units": unplaced_reasons(await ctx.snapshot())})

    return [
        web.get(f"{prefix}/x/why/{{name}}", why),
        web.get(f"{prefix}/x/unplaced", unplaced),
    ]
