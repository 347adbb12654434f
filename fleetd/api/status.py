"""`x/units/{name}/status` and `x/units/{name}/journal` (docs/api.md): a unit's `systemctl
status` and journal, answered by the machine running it — here, or forwarded to that machine's
peer listener (mutual TLS), whose routes (`LOCAL`) answer for this machine only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from fleetd.api.context import Context, Inspector, Peers
from fleetd.api.serialization import Fail, granted
from fleetd.api.streams import endless, stream_response
from fleetd.reconcile.inspection import journal_machine, status_machines
from fleetd.registry import Snapshot

__all__ = ["LOCAL", "UNREACHABLE", "peer_routes", "routes"]

LOCAL = "/fleet/v1/x/local"  # the peer listener's routes: answered here, never forwarded again
UNREACHABLE = "machineUnreachable"  # `reason` of a 502: the unit's machine could not be reached
_CONNECT_TIMEOUT = 5.0
_STATUS_TIMEOUT = 30.0


# --- streaming helpers -----------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _journal_of(inspector: Any, name: str, lines: int, follow: bool) -> AsyncIterator[Any]:
    stream = inspector.journal(name, lines=lines, follow=follow)
    if hasattr(stream, "__aenter__"):
        async with stream as opened:
            yield opened
        return
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _chunk(item: bytes | str) -> bytes:
    return item if isinstance(item, bytes) else (item + "\n").encode("utf-8", "replace")


def _query_int(request: web.Request, key: str, default: int) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Fail(400, f"invalid {key} {raw!r}: expected a non-negative integer") from None
    if value < 0:
        raise Fail(400, f"invalid {key} {raw!r}: expected a non-negative integer")
    return value


def _query_bool(request: web.Request, key: str) -> bool:
    raw = request.query.get(key, "false").lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no", ""):
        return False
    raise Fail(400, f"invalid {key} {raw!r}: expected true or false")


def _upstream_message(body: str) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.strip()


# --- this machine ----------------------------------------------------------------------------
def _local(peers: Peers) -> Inspector:
    if peers.inspector is None:
        raise Fail(503, "this fleetd has no local systemd to ask")
    return peers.inspector


async def _local_journal(
    peers: Peers, request: web.Request, name: str, lines: int, follow: bool
) -> web.StreamResponse:
    async with _journal_of(_local(peers), name, lines, follow) as stream:
        resp = await stream_response(request, "text/plain")
        async for item in stream:
            await resp.write(_chunk(item))
    await resp.write_eof()
    return resp


# --- handlers --------------------------------------------------------------------------------
def routes(ctx: Context, peers: Peers, prefix: str) -> list[web.RouteDef]:
    """The public routes under `prefix`: the unit's machine is found in the registry."""

    def unreachable(snapshot: Snapshot, machine: str, why: str, machines: list[str]) -> Fail:
        """502 with what a client needs to go there itself (fleetctl falls back to SSH):
        `reason` machineUnreachable, the machine and its public IP, and every machine the
        request concerned (docs/api.md)."""

        def ip(m: str) -> str:
            known = snapshot.machines.get(m)
            return known.public_ip if known is not None else ""

        return Fail(
            502, f"cannot reach machine {machine}: {why}", reason=UNREACHABLE,
            machineID=machine, machineIP=ip(machine),
            machines=[{"id": m, "primaryIP": ip(m)} for m in machines],
        )  # fmt: skip

    def peer_of(snapshot: Snapshot, machine: str, machines: list[str]) -> str:
        known = snapshot.machines.get(machine)
        ip = known.public_ip if known is not None else ""
        url = peers.peer_url(machine, ip) if peers.peer_url is not None else None
        if not url:
            why = "its fleetd address is unknown (this fleetd forwards to no peer listener)"
            raise unreachable(snapshot, machine, why, machines)
        return url.rstrip("/")

    async def status_of(snapshot: Snapshot, name: str, machine: str, machines: list[str]) -> str:
        if machine == peers.machine_id:
            return await _local(peers).status(name)
        base = peer_of(snapshot, machine, machines)
        url = f"{base}{LOCAL}/units/{quote(name, safe='@:')}/status"
        timeout = aiohttp.ClientTimeout(total=_STATUS_TIMEOUT, sock_connect=_CONNECT_TIMEOUT)
        try:
            async with peers.client().get(url, timeout=timeout, **peers.peer_tls()) as up:
                text = await up.text()
                if up.status != 200:
                    raise Fail(up.status, _upstream_message(text))
                return text
        except (aiohttp.ClientError, TimeoutError) as err:
            raise unreachable(snapshot, machine, f"{url}: {err}", machines) from None

    async def status(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        snapshot = await ctx.snapshot()
        machines = granted(status_machines(snapshot, name))
        texts = [await status_of(snapshot, name, m, machines) for m in machines]
        return web.Response(text="\n".join(texts), content_type="text/plain")

    async def journal(request: web.Request) -> web.StreamResponse:
        follow = _query_bool(request, "follow")
        with endless(request) if follow else contextlib.nullcontext():
            return await journal_of(request, _query_int(request, "lines", 10), follow)

    async def journal_of(request: web.Request, lines: int, follow: bool) -> web.StreamResponse:
        name = request.match_info["name"]
        snapshot = await ctx.snapshot()
        machine = granted(journal_machine(snapshot, name, request.query.get("machineID")))
        machines = [machine]
        if machine == peers.machine_id:
            return await _local_journal(peers, request, name, lines, follow)
        base = peer_of(snapshot, machine, machines)
        url = f"{base}{LOCAL}/units/{quote(name, safe='@:')}/journal"
        params = {"lines": str(lines), "follow": "true" if follow else "false"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT)
        resp: web.StreamResponse | None = None
        try:
            upstream = peers.client().get(url, params=params, timeout=timeout, **peers.peer_tls())
            async with upstream as up:
                if up.status != 200:
                    raise Fail(up.status, _upstream_message(await up.text()))
                resp = await stream_response(request, "text/plain")
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as err:
            if resp is None:  # nothing sent yet: the client may go there itself
                raise unreachable(snapshot, machine, f"{url}: {err}", machines) from None
            raise Fail(502, f"lost machine {machine} at {url}: {err}") from None
        assert resp is not None
        await resp.write_eof()
        return resp

    return [
        web.get(f"{prefix}/x/units/{{name}}/status", status),
        web.get(f"{prefix}/x/units/{{name}}/journal", journal),
    ]


def peer_routes(peers: Peers) -> list[web.RouteDef]:
    """The peer listener's routes (`LOCAL`): this machine's systemd only, never forwarded."""

    async def peer_status(request: web.Request) -> web.Response:
        text = await _local(peers).status(request.match_info["name"])
        return web.Response(text=text, content_type="text/plain")

    async def peer_journal(request: web.Request) -> web.StreamResponse:
        follow = _query_bool(request, "follow")
        with endless(request) if follow else contextlib.nullcontext():
            return await _local_journal(
                peers, request, request.match_info["name"], _query_int(request, "lines", 10),
                follow,
            )  # fmt: skip

    return [
        web.get(f"{LOCAL}/units/{{name}}/status", peer_status),
        web.get(f"{LOCAL}/units/{{name}}/journal", peer_journal),
    ]
