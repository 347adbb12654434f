"""What a waiting `fleetctl` is told about each unit: reached, failed, or still on its way.

Pure: the API's `x/wait` follows the registry and asks these functions about the units it
waits for after every change; they decide, from the registry's view alone, whether a unit has
reached the state waited for (`reached`), can no longer reach it (`failure`), and why a unit
still pending is pending (`pending_reason`). fleet's notion of a unit's current state
(`current_state`) lives here too, since the unit listings show the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from fleetd.model import BAD_LOAD_STATES, Job, JobState, Machine, UnitContent, UnitState
from fleetd.reconcile.globals import is_global
from fleetd.reconcile.states import LAUNCHED_STATES
from fleetd.registry.fold import Event

__all__ = [
    "Step",
    "View",
    "current_state",
    "failure",
    "is_global",
    "pending_reason",
    "reached",
    "settles",
    "systemd_reason",
    "unschedulable",
]

# Service types whose start job is done as soon as the main process is forked or executed: a
# process that dies at once still looked "active" for a moment, so a wait watches it settle.
_SETTLING_TYPES = frozenset({"simple", "exec", "idle"})


class View(Protocol):
    """The registry as a Snapshot or a ClusterView shows it."""

    jobs: Mapping[str, Job]
    units: Mapping[str, UnitContent]
    placements: Mapping[str, str]
    states: Mapping[tuple[str, str], UnitState]
    machines: Mapping[str, Machine]


class Step(Protocol):
    """One step of following the registry, as `fleetd.registry.Update` brings it: the view
    after the step, the events that changed it, and which units they may concern. The planners
    of the API's waits judge steps; the follower itself (I/O) stays in the handlers."""

    @property
    def view(self) -> View: ...

    @property
    def events(self) -> Sequence[Event]: ...

    @property
    def machines(self) -> bool: ...  # a machine came, went or changed metadata

    @property
    def everything(self) -> bool: ...  # the view was replaced (the start, a resync)

    @property
    def touched(self) -> frozenset[str] | None: ...  # the units concerned; None: any


def current_state(view: View, job: Job) -> str | None:
    """fleet's currentState: None for a global unit; "inactive" unless placed and the placed
    machine published a state; then "loaded", or "launched" when systemd runs it."""
    if is_global(view, job):
        return None
    machine_id = view.placements.get(job.name)
    if machine_id is None:
        return JobState.INACTIVE.value
    state = view.states.get((job.name, machine_id))
    if state is None:
        return JobState.INACTIVE.value
    if state.active in LAUNCHED_STATES:
        return JobState.LAUNCHED.value
    return JobState.LOADED.value


def _line(view: View, name: str, current: str | None, machine_id: str | None) -> dict[str, Any]:
    line: dict[str, Any] = {"name": name, "currentState": current}
    if machine_id is not None:
        machine = view.machines.get(machine_id)
        line["machineID"] = machine_id
        line["machineIP"] = machine.public_ip if machine is not None else ""
    return line


def reached(view: View, name: str, state: JobState, active: bool) -> dict[str, Any] | None:
    """The progress line of a unit that is in `state` (and systemd-active if asked), else None."""
    job = view.jobs.get(name)
    if job is None:
        return None
    if is_global(view, job):  # fleet never waits for global units
        return {"name": name, "global": True}
    current = current_state(view, job)
    if current != state.value:
        return None
    machine_id = view.placements.get(name)
    if state is JobState.INACTIVE and machine_id is not None:
        return None  # as in fleet, an unloaded unit is inactive once the engine unplaced it
    if active:
        unit_state = view.states.get((name, machine_id)) if machine_id is not None else None
        if unit_state is None or unit_state.active != "active":
            return None
    return _line(view, name, current, machine_id)


def systemd_reason(state: UnitState, target: JobState) -> str | None:
    """Why systemd's word on a unit means it cannot reach `target`, in systemd's words; None
    while it still may (a unit between two `Restart=` attempts is activating, not failed)."""
    if state.load in BAD_LOAD_STATES:
        why = f" ({state.load_error})" if state.load_error else ""
        return f"systemd cannot load it: LoadState={state.load}{why}"
    if target is not JobState.LAUNCHED:
        return None
    if state.active == "failed":
        parts = [f"ActiveState=failed SubState={state.sub}"]
        if state.result:
            parts.append(f"Result={state.result}")
        if state.exit:
            parts.append(state.exit)
        return "systemd reports " + ", ".join(parts)
    if state.job and state.job != "done" and state.active not in ("active", "activating"):
        return (
            f"systemd's start job ended with result {state.job} "
            f"(ActiveState={state.active} SubState={state.sub})"
        )
    return None


def failure(view: View, name: str, state: JobState) -> dict[str, Any] | None:
    """The line of a unit that can no longer reach `state` as systemd tells, else None.

    Only the state its machine published for the job's current content counts: a state from
    before a `--replace`, or from a machine the unit left, says nothing of this attempt.
    """
    job = view.jobs.get(name)
    if job is None or is_global(view, job):
        return None
    if job.desired is JobState.INACTIVE or state is JobState.INACTIVE:
        return None
    machine_id = view.placements.get(name)
    unit_state = view.states.get((name, machine_id)) if machine_id is not None else None
    if unit_state is None or unit_state.hash != job.unit_hash:
        return None
    reason = systemd_reason(unit_state, state)
    if reason is None:
        return None
    line = _line(view, name, "failed", machine_id)
    line.update(failed=True, reason=reason, **_systemd_fields(unit_state))
    return line


def _systemd_fields(state: UnitState) -> dict[str, str]:
    fields = {"load": state.load, "active": state.active, "sub": state.sub}
    for key, value in (("result", state.result), ("exit", state.exit),
                       ("loadError", state.load_error), ("job", state.job)):  # fmt: skip
        if value:
            fields[key] = value
    return fields


def unschedulable(view: View, name: str, reason: str) -> dict[str, Any]:
    """The line of a unit the scheduler can place on no machine of the cluster as it is."""
    job = view.jobs.get(name)
    current = current_state(view, job) if job is not None else None
    return {"name": name, "currentState": current, "failed": True, "unschedulable": True,
            "reason": f"cannot be scheduled: {reason}"}  # fmt: skip


def settles(view: View, name: str) -> bool:
    """Whether a unit that just became active is watched a moment before it counts: a service
    of a type whose start job ends at fork/exec (simple, exec, idle)."""
    job = view.jobs.get(name)
    if job is None or not name.endswith(".service"):
        return False
    content = view.units.get(job.unit_hash)
    if content is None:
        return False
    values: dict[str, str] = {}
    for option in content.unit.options:
        if option.section == "Service" and option.name in ("Type", "BusName", "ExecStart"):
            values[option.name] = option.value
    kind = values.get("Type", "").strip()
    if not kind:
        kind = "dbus" if "BusName" in values else "simple" if "ExecStart" in values else "oneshot"
    return kind in _SETTLING_TYPES


def pending_reason(view: View, name: str, unplaced: Callable[[], Mapping[str, str]]) -> str:
    """Why `name` has not reached the state waited for, in a user's words."""
    job = view.jobs.get(name)
    if job is None:
        return "unit does not exist"
    machine_id = view.placements.get(name)
    if machine_id is None:
        if job.desired == JobState.INACTIVE:
            return "desired state is inactive: the unit is not scheduled"
        return unplaced().get(name) or "waiting for the engine to schedule it"
    unit_state = view.states.get((name, machine_id))
    if unit_state is None:
        return f"waiting for machine {machine_id} to report the unit"
    return (
        f"systemd on machine {machine_id} reports "
        f"{unit_state.load}/{unit_state.active}/{unit_state.sub}"
    )
