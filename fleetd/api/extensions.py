"""fleetd's extensions under `/fleet/v1/x/` (docs/api.md): a unit's `systemctl status` and
journal, answered by the machine running it (forwarded there when it is not this one), and
`wait`, which streams units reaching a state as the registry's watch reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from fleetd.api.context import Context, Inspector, Peers
from fleetd.api.serialization import Fail, body_flag, body_timeout, read_json
from fleetd.api.streams import endless, stream_response
from fleetd.engine import plan_for
from fleetd.model import JobState, ModelError
from fleetd.reconcile.waiting import (
    current_state,
    failure,
    is_global,
    pending_reason,
    reached,
    settles,
    unschedulable,
)
from fleetd.registry import (
    UNITS_SNAPSHOT_MAX,
    Event,
    JobChanged,
    MachineDown,
    MachineUp,
    MetadataChanged,
    MetadataDeleted,
    Resync,
    Snapshot,
)
from fleetd.registry.events import ClusterView, units_touched

__all__ = ["LOCAL", "UNREACHABLE", "peer_routes", "routes", "unit_machines", "wait_routes"]

LOCAL = "/fleet/v1/x/local"  # the peer listener's routes: answered here, never forwarded again
UNREACHABLE = "machineUnreachable"  # `reason` of a 502: the unit's machine could not be reached
_stream_response = stream_response  # the name the wait handler calls it by
_CONNECT_TIMEOUT = 5.0
_STATUS_TIMEOUT = 30.0


# --- pure ------------------------------------------------------------------------------------
def unit_machines(snapshot: Snapshot, name: str, *, verb: str = "loaded") -> list[str]:
    """The machines whose systemd runs `name` (every one for a global unit), or Fail."""
    job = snapshot.jobs.get(name)
    if job is None:
        raise Fail(404, f"Unit {name} does not exist.")
    if is_global(snapshot, job):
        machines = sorted({m for (n, m) in snapshot.states if n == name})
    elif current_state(snapshot, job) == JobState.INACTIVE:
        machines = []
    else:
        machines = [snapshot.placements[name]]
    if not machines:
        raise Fail(409, f"Unit {name} does not appear to be {verb}.")
    return machines


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
        url = peers.peer_url(machine) if peers.peer_url is not None else None
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
        machines = unit_machines(snapshot, name)
        texts = [await status_of(snapshot, name, m, machines) for m in machines]
        return web.Response(text="\n".join(texts), content_type="text/plain")

    async def journal(request: web.Request) -> web.StreamResponse:
        follow = _query_bool(request, "follow")
        with endless(request) if follow else contextlib.nullcontext():
            return await journal_of(request, _query_int(request, "lines", 10), follow)

    async def journal_of(request: web.Request, lines: int, follow: bool) -> web.StreamResponse:
        name = request.match_info["name"]
        snapshot = await ctx.snapshot()
        machines = unit_machines(snapshot, name, verb="running")
        job = snapshot.jobs[name]
        if is_global(snapshot, job):
            wanted = request.query.get("machineID")
            if not wanted:
                raise Fail(
                    400,
                    f"Unable to retrieve journal of global unit {name}: "
                    f"name a machine with ?machineID= (one of {', '.join(machines)}).",
                )
            if wanted not in machines:
                raise Fail(409, f"Unit {name} does not appear to be running on {wanted}.")
            machines = [wanted]
        machine = machines[0]
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


def wait_routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def wait(request: web.Request) -> web.StreamResponse:
        names, state, active, timeout, settle = _wait_request(await read_json(request))
        # a few units: their keys only (the watch brings the rest of what they need)
        few = len(names) <= UNITS_SNAPSHOT_MAX
        snapshot = await (ctx.registry.units_snapshot(names) if few else ctx.snapshot())
        resp = await _stream_response(request, "application/x-ndjson")
        judge = _Judge(ClusterView(snapshot), names, state, active, settle)
        loop = asyncio.get_running_loop()

        async def write(lines: list[dict[str, Any]]) -> None:
            for line in lines:
                await resp.write(json.dumps(line).encode() + b"\n")

        async def unschedulable_now() -> None:
            """Units no machine of the cluster can take end the wait now: the planner on the
            waited units' view says so first (cheap), the whole registry confirms it."""
            unplaced = judge.unplaced()
            if not unplaced:
                return
            reasons = plan_for(judge.view.freeze(copy=False), {}).unplaced
            suspects = unplaced & set(reasons)
            if not suspects:
                return
            if few:  # the view holds the waited units only: the whole registry decides
                reasons = plan_for(await ctx.snapshot(), {}).unplaced
            await write(judge.unschedulable({n: reasons[n] for n in suspects if n in reasons}))

        await write(judge.judge(names, loop.time()))
        await unschedulable_now()
        if judge.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async with (
                        ctx.registry.watch(snapshot.revision + 1) as events,
                        contextlib.aclosing(_with_deadlines(events, judge.next_deadline)) as feed,
                    ):
                        async for event in feed:
                            if event is None:  # a settling unit's moment is over
                                await write(judge.judge(judge.due(loop.time()), loop.time()))
                            else:
                                touched = units_touched(judge.view.jobs, event)
                                judge.view.apply(event)
                                await write(judge.judge(touched, loop.time()))
                                if _membership(event, judge.pending):
                                    await unschedulable_now()
                            if not judge.pending:
                                break
        snapshot = judge.view.freeze(copy=False)
        plan: dict[str, str] | None = None
        whole = await ctx.snapshot() if judge.pending and few else snapshot  # the planner's view

        def unplaced() -> dict[str, str]:
            nonlocal plan
            if plan is None:
                plan = dict(plan_for(whole, {}).unplaced)
            return plan

        final = {
            "done": True,
            "pending": [
                {
                    "name": name,
                    "currentState": (
                        current_state(snapshot, snapshot.jobs[name])
                        if name in snapshot.jobs
                        else None
                    ),
                    "reason": pending_reason(snapshot, name, unplaced),
                }
                for name in judge.pending
            ],
        }
        await resp.write(json.dumps(final).encode() + b"\n")
        await resp.write_eof()
        return resp

    return [web.post(f"{prefix}/x/wait", wait)]


class _Judge:
    """The units a wait still waits for, judged against the view after every change."""

    def __init__(
        self, view: ClusterView, names: list[str], state: JobState, active: bool, settle: float
    ) -> None:
        self.view, self.state, self.active, self.settle = view, state, active, settle
        self.pending: dict[str, None] = dict.fromkeys(names)
        self.settling: dict[str, float] = {}  # unit -> when it has been active long enough
        # active before the wait began: nothing is starting, there is nothing to settle
        self.was_active = {n for n in names if reached(view, n, state, active) is not None}

    def judge(self, candidates: Iterable[str] | None, now: float) -> list[dict[str, Any]]:
        """The lines of the pending units among `candidates` (None: all) that reached the
        state (and stayed active `settle` seconds, for a service that may die at once) or can
        no longer reach it."""
        lines = []
        for name in list(self.pending) if candidates is None else candidates:
            if name not in self.pending:
                continue
            line = failure(self.view, name, self.state)
            if line is None:
                line = reached(self.view, name, self.state, self.active)
                if line is None:
                    self.settling.pop(name, None)  # not (or no longer) there
                    continue
                if self._must_settle(name, line):
                    if now < self.settling.setdefault(name, now + self.settle):
                        continue
            self.settling.pop(name, None)
            del self.pending[name]
            lines.append(line)
        return lines

    def _must_settle(self, name: str, line: dict[str, Any]) -> bool:
        return (
            self.active
            and self.settle > 0
            and not line.get("global")
            and name not in self.was_active
            and settles(self.view, name)
        )

    def next_deadline(self) -> float | None:
        return min(self.settling.values(), default=None)

    def due(self, now: float) -> list[str]:
        return sorted(n for n, t in self.settling.items() if t <= now)

    def unplaced(self) -> set[str]:
        """Pending units that want a machine and have none."""
        if self.state is JobState.INACTIVE:
            return set()
        return {
            n for n in self.pending
            if (job := self.view.jobs.get(n)) is not None
            and job.desired is not JobState.INACTIVE
            and n not in self.view.placements
            and not is_global(self.view, job)
        }

    def unschedulable(self, reasons: dict[str, str]) -> list[dict[str, Any]]:
        lines = []
        for name in sorted(reasons):
            if name in self.pending and name not in self.view.placements:
                del self.pending[name]
                lines.append(unschedulable(self.view, name, reasons[name]))
        return lines


def _membership(event: Event, pending: dict[str, None]) -> bool:
    """Whether `event` may change where the pending units can go."""
    match event:
        case MachineUp() | MachineDown() | MetadataChanged() | MetadataDeleted() | Resync():
            return True
        case JobChanged(job=job):
            return job.name in pending
    return False


async def _with_deadlines(
    events: AsyncIterator[Event], deadline: Callable[[], float | None]
) -> AsyncIterator[Event | None]:
    """The events, and None whenever `deadline()` (a loop time) passes before the next one.

    The watch is read by a task of its own so that a deadline never cancels a read half-way.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        async for event in events:
            await queue.put(event)

    reader = asyncio.create_task(pump(), name="wait-watch")
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            when = deadline()
            delay = None if when is None else max(0.0, when - loop.time())
            done, _ = await asyncio.wait({getter, reader}, timeout=delay,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            if reader in done:
                reader.result()  # the watch failed: its error ends the wait
                return
            yield None
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _wait_request(body: object) -> tuple[list[str], JobState, bool, float | None, float]:
    if not isinstance(body, dict):
        raise Fail(400, "unable to decode body: expected a JSON object")
    names = body.get("units")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise Fail(400, "units must be a non-empty list of unit names")
    try:
        state = JobState.parse(body.get("state"))
    except ModelError:
        raise Fail(
            400, f"invalid state {body.get('state')!r}: expected inactive, loaded or launched"
        ) from None
    active, timeout = body_flag(body, "active"), body_timeout(body)
    settle = body.get("settle", 0)
    if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle <= 600:
        raise Fail(400, "settle must be a number of seconds between 0 and 600")
    return list(dict.fromkeys(names)), state, active, timeout, float(settle)
