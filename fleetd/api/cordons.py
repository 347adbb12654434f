"""`x/machines/{id}/cordon`, `x/machines/{id}/drain` and `x/cordons` (docs/api.md): cordon a
machine, uncordon it, drain it, read its cordon and follow its drain.

What a drain covers and how it moves on are decided by the pure `fleetd/reconcile/drain.py`;
the engine leader moves drains on. This handler reads, writes the cordon as a compare-and-swap
on what it read, and streams a followed drain from the registry's watch.
"""

from __future__ import annotations

import time
import uuid

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.rolling import follow_document
from fleetd.api.serialization import Fail, granted, json_response, read_json
from fleetd.model import Cordon, DrainState
from fleetd.reconcile.drain import begin_drain, cordon_json, drain_over, read_drain, read_machine_id
from fleetd.registry import KeyKind, Snapshot

__all__ = ["routes"]

log = structlog.get_logger(__name__)

_ATTEMPTS = 5  # a write lost to the engine's own step is tried again on the new document


def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def machine(request: web.Request, *, known: bool = True) -> tuple[str, Snapshot]:
        """The machine ID of the URL and a fresh snapshot; 404 for a machine not in the
        cluster (unless `known` is False: a cordon outlives its machine)."""
        machine_id = granted(read_machine_id(request.match_info["id"]))
        snapshot = await ctx.snapshot()
        if known and machine_id not in snapshot.machines:
            raise Fail(404, f"machine {machine_id} is not in the cluster")
        return machine_id, snapshot

    async def listing(request: web.Request) -> web.Response:
        snapshot = await ctx.snapshot()
        cordons = sorted(snapshot.cordons.values(), key=lambda c: c.machine_id)
        return json_response({"cordons": [cordon_json(c) for c in cordons]})

    async def cordon(request: web.Request) -> web.Response:
        machine_id, _ = await machine(request)
        for _ in range(_ATTEMPTS):
            existing = await ctx.registry.get_cordon(machine_id)
            if existing is not None:  # cordoned already (or draining, drained): left as it is
                return json_response({"cordon": cordon_json(existing), "changed": False})
            new = Cordon(machine_id, DrainState.CORDONED, since=time.time())
            if await ctx.registry.put_cordon(new, None):
                log.info("api.cordoned", machine=machine_id, unit=None)
                return json_response({"cordon": cordon_json(new), "changed": True}, status=201)
        raise Fail(503, f"the cordon of {machine_id} kept changing: try again")

    async def uncordon(request: web.Request) -> web.Response:
        machine_id, snapshot = await machine(request, known=False)
        existing = snapshot.cordons.get(machine_id)
        if existing is None and machine_id not in snapshot.machines:
            raise Fail(404, f"machine {machine_id} is not in the cluster and not cordoned")
        removed = await ctx.registry.remove_cordon(machine_id)
        if removed:
            log.info(
                "api.uncordoned",
                machine=machine_id,
                unit=None,
                state=str(existing.state) if existing else None,
            )
        return json_response(
            {"uncordoned": removed, "was": cordon_json(existing) if existing else None}
        )

    async def drain(request: web.Request) -> web.Response:
        stop_globals = granted(read_drain(await read_json(request)))
        for _ in range(_ATTEMPTS):
            machine_id, snapshot = await machine(request)
            existing = await ctx.registry.get_cordon(machine_id)
            new = begin_drain(
                snapshot, machine_id, existing, uuid.uuid4().hex, time.time(), stop_globals
            )
            if new is None:  # draining already: that drain goes on
                assert existing is not None
                return json_response({"cordon": cordon_json(existing), "changed": False})
            if await ctx.registry.put_cordon(new, existing):
                log.info(
                    "api.drain_begun",
                    machine=machine_id,
                    unit=None,
                    drain=new.id,
                    targets=len(new.targets),
                    stop_globals=stop_globals,
                )
                return json_response({"cordon": cordon_json(new), "changed": True}, status=201)
        raise Fail(503, f"the cordon of {machine_id} kept changing: try again")

    async def item(request: web.Request) -> web.StreamResponse:
        machine_id, snapshot = await machine(request, known=False)
        follow = request.query.get("follow", "") in ("1", "true")
        current = snapshot.cordons.get(machine_id)
        if current is None:
            if machine_id not in snapshot.machines:
                raise Fail(404, f"machine {machine_id} is not in the cluster")
            raise Fail(404, f"machine {machine_id} is not cordoned")
        if not follow:
            return json_response(cordon_json(current))
        return await follow_document(
            ctx, request, snapshot, KeyKind.CORDON, lambda view: view.cordons.get(machine_id),
            cordon_json, drain_over,
        )  # fmt: skip

    base = f"{prefix}/x/machines/{{id}}"
    return [
        web.get(f"{prefix}/x/cordons", listing),
        web.put(f"{base}/cordon", cordon),
        web.delete(f"{base}/cordon", uncordon),
        web.get(f"{base}/cordon", item),
        web.post(f"{base}/drain", drain),
    ]
