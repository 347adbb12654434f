"""`/machines` (`api/machines.go`): live machines, and PATCH of their dynamic metadata (what a
PATCH changes is decided by `fleetd/reconcile/metadata_patch.py`)."""

from __future__ import annotations

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.pagination import paged
from fleetd.api.schema import machines_of
from fleetd.api.serialization import Fail, granted, json_response, read_json
from fleetd.reconcile.metadata_patch import plan_patch

__all__ = ["routes"]

log = structlog.get_logger(__name__)


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def collection(request: web.Request) -> web.Response:
        if request.method == "GET":
            tok = ctx.page_token(request)
            if tok.page == 1:  # machines only: not a read of every unit and state
                snapshot = await ctx.registry.machines_snapshot()
            else:
                snapshot = await ctx.listing(tok)
            return json_response(paged("machines", machines_of(snapshot), tok, snapshot.revision))
        if request.method == "PATCH":
            by_machine = granted(plan_patch(await read_json(request)))
            if by_machine:
                await ctx.registry.set_machine_metadata(by_machine)
            log.info("api.machine_metadata_patched", machines=sorted(by_machine))
            return web.Response(status=204, content_type="application/json")
        raise Fail(405, "only GET and PATCH supported against this resource")

    return [web.route("*", f"{prefix}/machines", collection)]
