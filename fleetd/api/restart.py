"""`POST /fleet/v1/x/units/{name}/restart` (docs/api.md): restart a unit on one machine.

The request is written to the registry (`Registry.request_restart`: a token per request); the
machine's agent restarts the unit once for it and publishes the token as done in the unit's
state. With `"wait": true` the answer streams until that state says how the restart went,
followed on the registry's watch (no polling), within an optional timeout. What is refused,
which tokens count and when the wait is over are decided by `fleetd/reconcile/restart.py`; this
handler reads, writes the request, follows the watch and writes the lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.serialization import Fail, granted, json_response, read_json
from fleetd.reconcile.restart import Outcome, plan_restart, read_restart
from fleetd.registry import ClusterView, JobNotFound

__all__ = ["routes"]

log = structlog.get_logger(__name__)


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def restart(request: web.Request) -> web.StreamResponse:
        ask = granted(read_restart(request.match_info["name"], await read_json(request)))
        name, machine = ask.name, ask.machine_id
        snapshot = await ctx.registry.units_snapshot([name])  # this unit's keys only
        asked = granted(plan_restart(snapshot, ask, uuid.uuid4().hex))
        token = asked.token
        try:
            await ctx.registry.request_restart(name, machine, token)
        except JobNotFound:  # destroyed since it was read
            raise Fail(404, f"Unit {name} does not exist.") from None
        log.info("api.restart_requested", unit=name, machine=machine, token=token)
        if not ask.wait:
            return json_response({"token": token})
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/x-ndjson"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(json.dumps({"token": token}).encode() + b"\n")
        view = ClusterView(snapshot)
        outcome: Outcome | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ask.timeout):
                updates = ctx.registry.follow(start=snapshot, view=view)
                async with contextlib.aclosing(updates):
                    async for update in updates:
                        outcome = asked.follow(update)
                        if outcome is not None:
                            break
        final = asked.final(view, outcome)
        log.info(
            "api.restart_answered",
            unit=name,
            machine=machine,
            token=token,
            restarted=final["restarted"],
            reason=final.get("reason"),
        )
        await resp.write(json.dumps(final).encode() + b"\n")
        await resp.write_eof()
        return resp

    return [web.post(f"{prefix}/x/units/{{name}}/restart", restart)]
