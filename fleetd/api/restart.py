"""`POST /fleet/v1/x/units/{name}/restart` (docs/api.md): restart a unit on one machine.

The request is written to the registry (`Registry.request_restart`: a token per request); the
machine's agent restarts the unit once for it and publishes the token as done in the unit's
state. With `"wait": true` the answer streams until that state says how the restart went,
followed on the registry's watch (no polling), within an optional timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.serialization import Fail, body_flag, body_timeout, json_response, read_json
from fleetd.model import JobState
from fleetd.reconcile.waiting import is_global, systemd_reason
from fleetd.registry import Changed, ClusterView, JobNotFound, KeyKind, Snapshot
from fleetd.unit import UnitNameError, parse_name

__all__ = ["Outcome", "restart_outcome", "runs_on"]

log = structlog.get_logger(__name__)

# ActiveStates on the way to a definite answer: between a restart's stop and its start, or
# between two automatic restarts (Restart=): wait on.
_TRANSIENT = frozenset({"activating", "deactivating", "reloading"})


# --- pure ------------------------------------------------------------------------------------
def runs_on(snapshot: Snapshot | ClusterView, name: str) -> set[str] | None:
    """The machines `name` runs on, as far as a restart is concerned: desired launched, and a
    state published by the machine (the placed one for a non-global unit). None: no such unit."""
    job = snapshot.jobs.get(name)
    if job is None:
        return None
    if job.desired is not JobState.LAUNCHED:
        return set()
    machines = {m for (n, m) in snapshot.states if n == name}
    if not is_global(snapshot, job):  # type: ignore[arg-type]
        machines &= {snapshot.placements.get(name)}
    return machines


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a restart ended: restarted, or not and why (in systemd's words when it can)."""

    restarted: bool
    reason: str = ""


def restart_outcome(
    view: Snapshot | ClusterView, name: str, machine_id: str, tokens: Set[str]
) -> Outcome | None:
    """The end of a restart of `name` on `machine_id` asked with one of `tokens` (the request's,
    and those of later requests that replaced it: their restart came after it too), or None
    while it is still on its way."""
    job = view.jobs.get(name)
    if job is None:
        return Outcome(False, "the unit was destroyed")
    state = view.states.get((name, machine_id))
    if state is None:
        gone = "" if machine_id in view.machines else " (the machine left the cluster)"
        return Outcome(False, f"machine {machine_id} no longer reports the unit{gone}")
    if state.restarted not in tokens:
        if job.desired is not JobState.LAUNCHED:
            return Outcome(False, f"its desired state is now {job.desired.value}")
        return None
    if state.load == "loaded" and state.active == "active":
        return Outcome(True)
    if state.load == "loaded" and state.active in _TRANSIENT:
        return None
    why = systemd_reason(state, JobState.LAUNCHED)  # in systemd's words, when it has them
    return Outcome(False, why or f"systemd reports {state.load}/{state.active}/{state.sub}")


def _restart_request(body: object) -> tuple[str, bool, float | None]:
    """(machine ID, wait, timeout) of a restart request, or 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise Fail(400, "unable to decode body: expected a JSON object")
    unknown = sorted(set(body) - {"machineID", "wait", "timeout"})
    if unknown:
        raise Fail(400, f"unknown field {unknown[0]!r}: expected machineID, wait and timeout")
    machine = body.get("machineID")
    if not isinstance(machine, str) or not machine:
        raise Fail(400, "machineID must be the ID of a machine running the unit")
    return machine, body_flag(body, "wait"), body_timeout(body)


# --- handler ---------------------------------------------------------------------------------
def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    async def restart(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        machine, wait, timeout = _restart_request(await read_json(request))
        try:
            parse_name(name)
        except UnitNameError as err:
            raise Fail(400, str(err)) from None
        snapshot = await ctx.registry.units_snapshot([name])  # this unit's keys only
        machines = runs_on(snapshot, name)
        if machines is None:
            raise Fail(404, f"Unit {name} does not exist.")
        if machine not in machines:
            raise Fail(409, f"Unit {name} does not appear to be running on {machine}.")
        token = uuid.uuid4().hex
        try:
            await ctx.registry.request_restart(name, machine, token)
        except JobNotFound:
            raise Fail(404, f"Unit {name} does not exist.") from None
        log.info("api.restart_requested", unit=name, machine=machine, token=token)
        if not wait:
            return json_response({"token": token})
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/x-ndjson"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(json.dumps({"token": token}).encode() + b"\n")
        view = ClusterView(snapshot)
        tokens = {token}
        outcome: Outcome | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                updates = ctx.registry.follow(start=snapshot, view=view)
                async with contextlib.aclosing(updates):
                    async for update in updates:
                        touched = update.touched
                        if not update.events or (touched is not None and name not in touched):
                            continue
                        tokens |= {  # a later ask replaced ours
                            e.doc.token for e in update.events
                            if isinstance(e, Changed) and e.kind is KeyKind.RESTART
                            and e.ident == (name, machine)
                        }  # fmt: skip
                        outcome = restart_outcome(view, name, machine, tokens)
                        if outcome is not None:
                            break
        final = _final(view, name, machine, token, outcome)
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


def _final(
    view: ClusterView, name: str, machine_id: str, token: str, outcome: Outcome | None
) -> dict[str, Any]:
    """The last line of a waited restart: how it ended, and what systemd says of the unit."""
    machine = view.machines.get(machine_id)
    line: dict[str, Any] = {
        "done": True,
        "name": name,
        "machineID": machine_id,
        "machineIP": machine.public_ip if machine is not None else "",
        "token": token,
        "restarted": outcome is not None and outcome.restarted,
    }
    state = view.states.get((name, machine_id))
    if state is not None:
        line["systemdLoadState"] = state.load
        line["systemdActiveState"] = state.active
        line["systemdSubState"] = state.sub
    if outcome is None:
        seen = f" (systemd reports {state.load}/{state.active}/{state.sub})" if state else ""
        line["reason"] = f"timed out waiting for unit {name} to restart on {machine_id}{seen}"
    elif not outcome.restarted:
        line["reason"] = outcome.reason
    return line
