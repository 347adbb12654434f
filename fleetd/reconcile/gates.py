"""What rollouts and drains ask of one machine's agent: which version of a unit to run, and
which units' health to judge. Pure: the agent asks here with its view of the registry.

A rollout (`Rollout`, `rollout/<name>`) pins each of its instances to a version while it runs:
an instance not touched yet keeps the previous content, one being updated (or updated) runs
the new one, one reverting runs the previous one again. An instance the rollout (or a drain,
for a unit that moved to this machine) is judging gets a `Gate`: the agent judges its health
(`UpdateHealthCheck=`, or systemd's word and `NRestarts`) and publishes it in the unit's state
under the gate's token, which the engine leader reads to move the rollout (or drain) on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.model import Phase, Rollout, RolloutAction
from fleetd.registry.fold import ClusterView, Snapshot
from fleetd.rules.update import DEFAULT_POLICY, UpdatePolicy
from fleetd.unit_names import UnitNameError, parse_name

__all__ = ["Gate", "Health", "gates_on", "pinned_hash", "rollout_of"]


class Health:
    """The words of `UnitState.health`."""

    CHECKING = "checking"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class Gate:
    """Judge the health of one unit on this machine for the rollout or drain `token`."""

    token: str  # the rollout's (or drain's) id: the state's `gate` names it
    hash: str  # the content the unit must run to be judged
    restart: str  # the restart token it must have done first ("" when none is asked)
    min_healthy: float  # seconds it must stay healthy
    deadline: float  # seconds from the gate's start after which it is unhealthy
    check: str  # the UpdateHealthCheck= command ("": systemd's word and NRestarts)


def rollout_of(view: ClusterView | Snapshot, unit: str) -> Rollout | None:
    """The running rollout that covers `unit`: its own (a Global unit) or its template's."""
    rollout = view.rollouts.get(unit)
    if rollout is None:
        try:
            template = parse_name(unit).template
        except UnitNameError:
            return None
        if not template or template == unit:
            return None
        rollout = view.rollouts.get(template)
    if rollout is None or rollout.state.finished:
        return None
    return rollout


def pinned_hash(view: ClusterView | Snapshot, unit: str, machine_id: str) -> str | None:
    """The content `unit` must run on `machine_id` while a rollout covers it there, or None
    (the job's own content)."""
    rollout = rollout_of(view, unit)
    if rollout is None:
        return None
    target = rollout.target(unit, machine_id)
    if target is None or target.phase is Phase.SKIPPED:
        return None
    return rollout.hash_for(target)


def gates_on(
    view: ClusterView | Snapshot,
    machine_id: str,
    policies: Mapping[str, UpdatePolicy],
) -> dict[str, Gate]:
    """The units of this machine (`policies`: each unit held here → its update policy) whose
    health a rollout or a drain is judging now."""
    gates: dict[str, Gate] = {}
    for unit in policies:
        rollout = rollout_of(view, unit)
        if rollout is None:
            continue
        target = rollout.target(unit, machine_id)
        if target is None or target.phase is not Phase.UPDATING:
            continue
        p = rollout.policy
        restart = rollout.id if rollout.action is RolloutAction.RESTART else ""
        gates[unit] = Gate(
            rollout.id, rollout.to_hash, restart, p.min_healthy, p.deadline, p.health_check
        )
    for cordon in view.cordons.values():
        for target in cordon.targets:
            if (
                target.machine_id == machine_id
                and target.phase is Phase.UPDATING
                and target.unit in policies
                and target.unit not in gates
                and (job := view.jobs.get(target.unit)) is not None
            ):
                p = policies.get(target.unit, DEFAULT_POLICY)
                gates[target.unit] = Gate(
                    cordon.id, job.unit_hash, "", p.min_healthy, p.deadline, p.health_check
                )
    return gates
