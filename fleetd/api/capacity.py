"""`GET /fleet/v1/x/machines` (docs/api.md): each live machine's capacity and what its units
reserve of it, in numbers (bytes, CPUs), and how many units reserve anything.

Read from the whole registry at one revision (the reservations of every placed and Global unit)
and worked out by the pure `fleetd/reconcile/capacity.py`; nothing is written. fleet's
`GET /machines` keeps fleet's shape.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.serialization import json_response
from fleetd.reconcile.capacity import cluster_use

__all__ = ["routes"]


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    specs: dict[str, Any] = {}  # the units' requirements, kept between requests (`job_specs`)

    async def machines(request: web.Request) -> web.Response:
        return json_response(cluster_use(await ctx.snapshot(), specs).to_dict())

    return [web.get(f"{prefix}/x/machines", machines)]
