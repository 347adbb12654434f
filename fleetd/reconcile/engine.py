"""The engine's plan: from jobs, machines and current placements to schedule/unschedule tasks.

Pure and deterministic: same input, same plan. The plan is the difference between the current
placements and a fixpoint in which every placed job satisfies its rules, every job that can be
placed is, and nothing moves without a reason (no rebalancing of healthy units, as in fleet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fleetd.model import short_id
from fleetd.reconcile.scheduler import (
    ClusterState,
    JobSpec,
    MachineSpec,
    Rejection,
    place,
    reject_reason,
)

__all__ = ["Action", "EnginePlan", "Reason", "Task", "plan_engine"]

# A pass places, then re-checks what placing changed (Replaces moves a unit, a MachineOf
# follower waits for its target). Each round settles at least one more job; the bound only
# guards against a cycle of Replaces rules chasing each other.
MAX_ROUNDS = 8


class Action(StrEnum):
    SCHEDULE = "schedule"
    UNSCHEDULE = "unschedule"


class Reason(StrEnum):
    PLACED = "placed on the least-loaded machine that meets its requirements"
    MOVED = "requirements no longer hold on its machine; placed on another"
    JOB_DESTROYED = "the unit was destroyed"
    DESIRED_INACTIVE = "the unit's desired state is inactive"
    MACHINE_GONE = "its machine left the cluster"
    GLOBAL = "global units run on every matching machine and are not placed"
    REQUIREMENTS_BROKEN = "its requirements no longer hold on its machine"
    NO_MACHINE = "no machine meets its requirements"


@dataclass(frozen=True, slots=True)
class Task:
    action: Action
    job: str
    machine_id: str
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EnginePlan:
    tasks: tuple[Task, ...]
    # jobs that want a machine and have none after this plan, with why (shown by fleetctl)
    unplaced: Mapping[str, str] = field(default_factory=dict)


def plan_engine(
    jobs: Mapping[str, JobSpec],
    machines: Iterable[MachineSpec],
    placements: Mapping[str, str],
) -> EnginePlan:
    """Tasks that make `placements` right for `jobs` on `machines`."""
    machines = list(machines)
    state = ClusterState(machines, jobs, placements)
    why: dict[str, tuple[Reason, str]] = {}

    for name in sorted(placements):
        reason = _unplace_reason(name, placements[name], jobs, state)
        if reason is not None:
            why[name] = reason
            if name in state.placements:
                state.unassign(name)

    unplaced: dict[str, list[Rejection]] = {}
    for _ in range(MAX_ROUNDS):
        changed = _place_pending(jobs, state, why, unplaced)
        changed |= _evict_broken(state, why)
        if not changed:
            break

    tasks: list[Task] = []
    for name in sorted(set(placements) | set(state.placements)):
        before, after = placements.get(name), state.placements.get(name)
        if before == after:
            continue
        reason, detail = why.get(name, (Reason.PLACED, ""))
        if before is not None:
            tasks.append(Task(Action.UNSCHEDULE, name, before, _unschedule_reason(reason), detail))
        if after is not None:
            place_reason = Reason.MOVED if before is not None else Reason.PLACED
            tasks.append(Task(Action.SCHEDULE, name, after, place_reason, detail))
    explained = {
        name: _explain(rejections, bool(machines))
        for name, rejections in sorted(unplaced.items())
        if name not in state.placements
    }
    return EnginePlan(tuple(tasks), explained)


def _unschedule_reason(reason: Reason) -> Reason:
    return Reason.REQUIREMENTS_BROKEN if reason in (Reason.PLACED, Reason.MOVED) else reason


def _unplace_reason(
    name: str, machine_id: str, jobs: Mapping[str, JobSpec], state: ClusterState
) -> tuple[Reason, str] | None:
    job = jobs.get(name)
    if job is None:
        return Reason.JOB_DESTROYED, ""
    if machine_id not in state.machines:
        return Reason.MACHINE_GONE, machine_id
    if job.requirements.is_global:
        return Reason.GLOBAL, ""
    if not job.wants_placement:
        return Reason.DESIRED_INACTIVE, ""
    return None


def _place_pending(
    jobs: Mapping[str, JobSpec],
    state: ClusterState,
    why: dict[str, tuple[Reason, str]],
    unplaced: dict[str, list[Rejection]],
) -> bool:
    """Place every job that wants a machine and has none; followers after their targets."""
    pending = sorted(
        name for name, job in jobs.items() if job.wants_placement and name not in state.placements
    )
    changed = False
    progress = True
    while pending and progress:
        progress = False
        still: list[str] = []
        for name in pending:
            machine_id, rejections = place(jobs[name], state)
            if machine_id is None:
                unplaced[name] = rejections
                still.append(name)
                continue
            state.assign(name, machine_id)
            unplaced.pop(name, None)
            progress = changed = True
        pending = still
    return changed


def _evict_broken(state: ClusterState, why: dict[str, tuple[Reason, str]]) -> bool:
    """Unassign placed jobs whose rules no longer hold (a Replaces arrived, a target moved)."""
    changed = False
    for name in sorted(state.placements):
        machine_id = state.placements[name]
        rejection = reject_reason(state.jobs[name], machine_id, state)
        if rejection is not None:
            state.unassign(name)
            why[name] = (Reason.REQUIREMENTS_BROKEN, rejection.text)
            changed = True
    return changed


def _explain(rejections: list[Rejection], have_machines: bool) -> str:
    if not have_machines:
        return "no machines in the cluster"
    if not rejections:
        return Reason.NO_MACHINE.value
    by_text: dict[str, list[str]] = {}
    for rejection in rejections:
        by_text.setdefault(rejection.text, []).append(short_id(rejection.machine_id))
    parts = []
    for text, machines in sorted(by_text.items()):
        shown = [m for m in machines if m]
        if not shown:
            parts.append(text)
            continue
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        parts.append(f"{text} ({', '.join(shown[:3])}{more})")
    return "; ".join(parts)
