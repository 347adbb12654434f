"""`/machines` (`api/machines.go`): live machines, and PATCH of their dynamic metadata."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.pagination import paged
from fleetd.api.schema import machines_of
from fleetd.api.serialization import Fail, json_response, read_json

__all__ = ["MetadataChange", "parse_patch", "routes"]

log = structlog.get_logger(__name__)

_PATH = re.compile(r"^/([^/]+)/metadata/([A-Za-z0-9_.-]+)$")


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """One PATCH operation: set (or, with value "", remove) a metadata key of a machine."""

    machine_id: str
    key: str
    value: str


def parse_patch(body: object) -> list[MetadataChange]:
    """fleet's PATCH body: `[{"op","path":"/<id>/metadata/<key>","value":{"value":v}}]`.

    A flat string `value` (as fleet's documentation shows it) is accepted too.
    """
    if not isinstance(body, list):
        raise Fail(400, "unable to decode body: expected a JSON array of operations")
    changes = []
    for op in body:
        if not isinstance(op, Mapping):
            raise Fail(400, "unable to decode body: each operation must be a JSON object")
        kind = op.get("op")
        if kind not in ("add", "remove", "replace"):
            raise Fail(400, "invalid op: expect add, remove, or replace")
        path = op.get("path")
        match = _PATH.match(path) if isinstance(path, str) else None
        if match is None:
            raise Fail(400, "machine metadata path invalid")
        value = op.get("value")
        if isinstance(value, Mapping):
            value = value.get("value")
        if kind == "remove":
            value = ""
        elif not isinstance(value, str) or not value:
            raise Fail(400, "invalid value: add and replace require a value")
        changes.append(MetadataChange(match.group(1), match.group(2), value))
    return changes


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
            changes = parse_patch(await read_json(request))
            by_machine: dict[str, dict[str, str]] = {}
            for change in changes:  # in order: a later operation on the same key wins
                by_machine.setdefault(change.machine_id, {})[change.key] = change.value
            if by_machine:
                await ctx.registry.set_machine_metadata(by_machine)
            log.info("api.machine_metadata_patched", machines=sorted(by_machine))
            return web.Response(status=204, content_type="application/json")
        raise Fail(405, "only GET and PATCH supported against this resource")

    return [web.route("*", f"{prefix}/machines", collection)]
