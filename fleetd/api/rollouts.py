"""`x/rollouts` (docs/api.md, docs/rolling-updates.md): begin a rollout, read it, follow it,
pause, resume, promote or undo it.

What a rollout covers, when a request is refused and what a command does are decided by the
pure `fleetd/reconcile/rollout.py`; the engine leader moves rollouts on. This handler reads,
writes one guarded transaction, and streams a followed rollout from the registry's watch.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.rolling import begin_rollout, follow_document
from fleetd.api.serialization import Fail, granted, json_response, read_json
from fleetd.reconcile.rollout import RolloutRefused, Verb, command
from fleetd.reconcile.rollout_request import read_begin, rollout_json
from fleetd.registry import KeyKind

__all__ = ["routes"]

log = structlog.get_logger(__name__)

_COMMAND_ATTEMPTS = 5  # a command lost to the engine's own step is tried again on the new one


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def create(request: web.Request) -> web.Response:
        ask = granted(read_begin(await read_json(request)))
        rollout = await begin_rollout(ctx, ask.name, ask.action, ask.unit)
        if rollout is None:
            return json_response({"rollout": None, "replaced": True}, status=200)
        return json_response({"rollout": rollout_json(rollout)}, status=201)

    async def listing(request: web.Request) -> web.Response:
        snapshot = await ctx.snapshot()
        rollouts = sorted(snapshot.rollouts.values(), key=lambda r: r.name)
        return json_response({"rollouts": [rollout_json(r) for r in rollouts]})

    async def item(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        follow = request.query.get("follow", "") in ("1", "true")
        snapshot = await ctx.snapshot()
        rollout = snapshot.rollouts.get(name)
        if rollout is None:
            raise Fail(404, f"no rollout of {name}")
        if not follow:
            return json_response(rollout_json(rollout))
        return await follow_document(
            ctx, request, snapshot, KeyKind.ROLLOUT, lambda view: view.rollouts.get(name),
            rollout_json, lambda r: r.state.finished,
        )  # fmt: skip

    async def act(request: web.Request) -> web.Response:
        name, verb_text = request.match_info["name"], request.match_info["verb"]
        try:
            verb = Verb(verb_text)
        except ValueError:
            raise Fail(404, f"no such rollout command {verb_text!r}") from None
        for _ in range(_COMMAND_ATTEMPTS):
            rollout = await ctx.registry.get_rollout(name)
            if rollout is None:
                raise Fail(404, f"no rollout of {name}")
            try:
                new, revert = command(rollout, verb, time.time())
            except RolloutRefused as err:
                raise Fail(409, str(err)) from None
            if await ctx.registry.advance_rollout(rollout, new, revert=revert):
                log.info(
                    "api.rollout_command",
                    unit=name,
                    rollout=new.id,
                    command=str(verb),
                    state=str(new.state),
                    progress=new.progress,
                )
                return json_response(rollout_json(new))
        raise Fail(503, f"the rollout of {name} kept changing: try again")

    return [
        web.post(f"{prefix}/x/rollouts", create),
        web.get(f"{prefix}/x/rollouts", listing),
        web.get(f"{prefix}/x/rollouts/{{name}}", item),
        web.post(f"{prefix}/x/rollouts/{{name}}/{{verb}}", act),
    ]
