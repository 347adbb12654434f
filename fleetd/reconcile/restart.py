"""What `POST /fleet/v1/x/units/{name}/restart` (docs/api.md) does, decided without I/O.

A restart is asked on one machine: the request is checked alone first (`read_restart`, so a bad
one is refused before etcd is read), then against the unit as the registry has it
(`plan_restart`: the unit must run on that machine). The handler writes the request with a
token of its own; the machine's agent restarts the unit once per token and publishes the token
as done in the unit's state. A waited restart (`"wait": true`) is then followed step by step on
the registry's watch: `Restart.follow` keeps which tokens count as ours and says when the wait
is over and how it ended; `Restart.final` is the last line the caller reads.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field
from typing import Any

from fleetd.model import JobState
from fleetd.reconcile import body as fields
from fleetd.reconcile.globals import is_global
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.states import TRANSIENT_STATES
from fleetd.reconcile.waiting import Step, View, systemd_reason
from fleetd.registry.fold import Changed
from fleetd.registry.keys import KeyKind
from fleetd.unit import UnitNameError, parse_name

__all__ = ["Outcome", "Restart", "RestartAsk", "plan_restart", "read_restart",
           "restart_outcome", "runs_on"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class RestartAsk:
    """A restart request that passed the checks of the request alone."""

    name: str
    machine_id: str
    wait: bool
    timeout: float | None  # seconds a waited restart is followed (None: until it ends)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a restart ended: restarted, or not and why (in systemd's words when it can)."""

    restarted: bool
    reason: str = ""


# --- the request -----------------------------------------------------------------------------
def read_restart(name: str, body: object) -> RestartAsk | Refuse:
    """The request to restart `name` with the decoded JSON `body`, or its 400: the body is
    checked before the name, unknown fields are refused (a misspelt `wait` would otherwise
    silently not wait)."""
    if not isinstance(body, dict):
        return Refuse(400, "unable to decode body: expected a JSON object")
    unknown = sorted(set(body) - {"machineID", "wait", "timeout"})
    if unknown:
        return Refuse(400, f"unknown field {unknown[0]!r}: expected machineID, wait and timeout")
    machine = body.get("machineID")
    if not isinstance(machine, str) or not machine:
        return Refuse(400, "machineID must be the ID of a machine running the unit")
    waited = fields.wait_fields(body, "wait")
    if isinstance(waited, Refuse):
        return waited
    try:
        parse_name(name)
    except UnitNameError as err:
        return Refuse(400, str(err))
    return RestartAsk(name, machine, *waited)


def runs_on(view: View, name: str) -> set[str] | None:
    """The machines `name` runs on, as far as a restart is concerned: desired launched, and a
    state published by the machine (the placed one for a non-global unit: a stale state left
    elsewhere names a machine whose agent will not restart it). None: no such unit."""
    job = view.jobs.get(name)
    if job is None:
        return None
    if job.desired is not JobState.LAUNCHED:
        return set()
    machines = {m for (n, m) in view.states if n == name}
    if not is_global(view, job):
        machines &= {view.placements.get(name)}
    return machines


def plan_restart(view: View, ask: RestartAsk, token: str) -> Restart | Refuse:
    """The restart to ask with `token`, or fleetctl's words for why the unit cannot be
    restarted there: a restart no agent would ever do must not be written."""
    machines = runs_on(view, ask.name)
    if machines is None:
        return Refuse(404, f"Unit {ask.name} does not exist.")
    if ask.machine_id not in machines:
        return Refuse(409, f"Unit {ask.name} does not appear to be running on {ask.machine_id}.")
    return Restart(ask.name, ask.machine_id, token)


# --- how it ends -----------------------------------------------------------------------------
def restart_outcome(view: View, name: str, machine_id: str, tokens: Set[str]) -> Outcome | None:
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
    if state.load == "loaded" and state.active in TRANSIENT_STATES:
        return None
    why = systemd_reason(state, JobState.LAUNCHED)  # in systemd's words, when it has them
    return Outcome(False, why or f"systemd reports {state.load}/{state.active}/{state.sub}")


@dataclass(slots=True)
class Restart:
    """One restart asked with `token`, followed until it ends.

    The agent keeps one request per unit and machine: a later request replaces ours before the
    agent may have done it, and the restart done for it came after ours was asked, so its token
    counts as ours (`tokens`)."""

    name: str
    machine_id: str
    token: str
    tokens: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.tokens.add(self.token)

    def follow(self, step: Step) -> Outcome | None:
        """How the restart ended after `step`, or None while it is on its way. A step that
        concerns neither the unit nor the machines cannot end it."""
        touched = step.touched
        if not step.events or (touched is not None and self.name not in touched):
            return None
        self.tokens |= {
            e.doc.token for e in step.events
            if isinstance(e, Changed) and e.kind is KeyKind.RESTART
            and e.ident == (self.name, self.machine_id)
        }  # fmt: skip
        return restart_outcome(step.view, self.name, self.machine_id, self.tokens)

    def final(self, view: View, outcome: Outcome | None) -> dict[str, Any]:
        """The last line of a waited restart: how it ended (None: the wait timed out), and
        what systemd says of the unit, so a caller sees why without asking again."""
        machine = view.machines.get(self.machine_id)
        line: dict[str, Any] = {
            "done": True,
            "name": self.name,
            "machineID": self.machine_id,
            "machineIP": machine.public_ip if machine is not None else "",
            "token": self.token,
            "restarted": outcome is not None and outcome.restarted,
        }
        state = view.states.get((self.name, self.machine_id))
        if state is not None:
            line["systemdLoadState"] = state.load
            line["systemdActiveState"] = state.active
            line["systemdSubState"] = state.sub
        if outcome is None:
            seen = f" (systemd reports {state.load}/{state.active}/{state.sub})" if state else ""
            line["reason"] = (
                f"timed out waiting for unit {self.name} to restart on {self.machine_id}{seen}"
            )
        elif not outcome.restarted:
            line["reason"] = outcome.reason
        return line
