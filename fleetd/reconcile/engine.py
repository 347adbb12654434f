"""The engine's plan: from jobs, machines and current placements to schedule/unschedule tasks.

Pure and deterministic: same input, same plan. The plan is the difference between the current
placements and a fixpoint in which every placed job satisfies its rules, every job that can be
placed is, and nothing moves without a reason (no rebalancing of healthy units, as in fleet).
A cordoned machine takes no new unit (the scheduler refuses it) and keeps its units; a unit a
drain released (`released`) moves off its machine if another machine takes it, in the same one
compare-and-swap as any move, and else stays there (`EnginePlan.held` says why).

Around the planner, what the shell needs decided and nothing else: the planner's view of the
registry (`job_specs`, `plan_for`), the plan as one guarded write per job (`steps`: a job that
moves is one compare-and-swap, not an unschedule and a schedule), and a won write recorded in
the view before its watch event comes back (`record_won`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fleetd.model import Assignment, Job, Placement, UnitContent, short_id
from fleetd.reconcile.drain import released as drain_released
from fleetd.reconcile.globals import is_global
from fleetd.reconcile.scheduler import (
    ClusterState,
    JobSpec,
    MachineSpec,
    Rejection,
    Strategy,
    place,
    reject_reason,
)
from fleetd.reconcile.states import RUNNING_STATES
from fleetd.registry.fold import ClusterView, Snapshot
from fleetd.registry.keys import KeyKind
from fleetd.registry.metadata import effective_metadata

__all__ = [
    "Action",
    "EnginePlan",
    "Reason",
    "Step",
    "Task",
    "job_specs",
    "machine_specs",
    "plan_engine",
    "plan_for",
    "record_won",
    "settled",
    "steps",
]

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
    DRAINED = "its machine is being drained: moved to another"
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
    # units a drain released that no other machine takes, with why: they stay where they are
    held: Mapping[str, str] = field(default_factory=dict)


def plan_engine(
    jobs: Mapping[str, JobSpec],
    machines: Iterable[MachineSpec],
    placements: Mapping[str, str],
    settled: Collection[tuple[str, str]] = (),
    strategy: Strategy = Strategy.LEASTLOADED,
    released: Collection[str] = (),
) -> EnginePlan:
    """Tasks that make `placements` right for `jobs` on `machines` (`settled`: (unit, machine)
    of the units running there with the content they have now, see `settled`; `strategy`:
    how machines that fit a unit with reservations are ranked; `released`: units a drain
    moves off their machine, see `fleetd.reconcile.drain`)."""
    machines = list(machines)
    state = ClusterState(machines, jobs, placements, settled, strategy)
    why: dict[str, tuple[Reason, str]] = {}
    held: dict[str, str] = {}

    for name in sorted(placements):
        reason = _unplace_reason(name, placements[name], jobs, state)
        if reason is None and name in released:
            reason = _release(name, state, held)
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
    for name in sorted(released):  # taken by none after all: back where it was
        was = placements.get(name)
        if (
            why.get(name, (None,))[0] is Reason.DRAINED
            and name not in state.placements
            and (was in state.machines)
        ):
            state.assign(name, was)
            held[name] = _explain(unplaced.pop(name, []), bool(machines))

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
            if reason is Reason.DRAINED:
                place_reason = reason
            tasks.append(Task(Action.SCHEDULE, name, after, place_reason, detail))
    explained = {
        name: _explain(rejections, bool(machines))
        for name, rejections in sorted(unplaced.items())
        if name not in state.placements
    }
    return EnginePlan(tuple(tasks), explained, held)


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


def _release(name: str, state: ClusterState, held: dict[str, str]) -> tuple[Reason, str] | None:
    """A unit a drain released: taken off its machine when another machine can take it (the
    placing rounds then place it), else left there, with why in `held`."""
    machine_id = state.placements.get(name)
    if machine_id is None:
        return None
    state.unassign(name)
    found, rejections = place(state.jobs[name], state)
    if found is None:
        state.assign(name, machine_id)
        held[name] = _explain(rejections, True)
        return None
    return Reason.DRAINED, f"drained off {short_id(machine_id)}"


def _place_pending(
    jobs: Mapping[str, JobSpec],
    state: ClusterState,
    why: dict[str, tuple[Reason, str]],
    unplaced: dict[str, list[Rejection]],
) -> bool:
    """Place every job that wants a machine and has none; followers after their targets.
    In name order; under binpack the largest reservations first (first-fit decreasing)."""
    pending = sorted(
        name for name, job in jobs.items() if job.wants_placement and name not in state.placements
    )
    if state.strategy is Strategy.BINPACK:
        pending.sort(key=lambda name: _largest_first(jobs[name]))
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


def _largest_first(job: JobSpec) -> tuple[float, float]:
    memory, cpus = job.requirements.reserves
    return -memory, -cpus


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
        where = f" on {len(shown)} machines" if len(shown) > 1 else ""
        parts.append(f"{text}{where} ({', '.join(shown[:3])}{more})")
    return "; ".join(parts)


# ---- around the planner: its input from the registry, its output as writes


def job_specs(
    jobs: Mapping[str, Job],
    units: Mapping[str, UnitContent],
    cache: dict[str, tuple[Job, JobSpec]] | None = None,
) -> dict[str, JobSpec]:
    """The planner's view of the jobs: requirements read from each job's unit content.

    A job whose content is missing (a corrupt or racing write) is left out: it cannot be
    scheduled without knowing its requirements. `cache` keeps each job's spec while the job
    is the same object (a plan over 10,000 jobs was mostly making their specs again); specs of
    jobs gone, or left out, are dropped from it.
    """
    cache = {} if cache is None else cache
    specs: dict[str, JobSpec] = {}
    for name, job in jobs.items():
        known = cache.get(name)
        if known is not None and known[0] is job:
            specs[name] = known[1]
            continue
        content = units.get(job.unit_hash)
        if content is None:
            continue
        specs[name] = JobSpec(name, job.desired, content.unit.requirements(name))
        cache[name] = (job, specs[name])
    if len(cache) > len(specs):
        for name in [n for n in cache if n not in specs]:
            del cache[name]
    return specs


def plan_for(
    snapshot: Snapshot,
    cache: dict[str, tuple[Job, JobSpec]],
    strategy: Strategy = Strategy.LEASTLOADED,
) -> EnginePlan:
    """The plan of a snapshot of the registry (machines with their effective metadata)."""
    return plan_engine(
        job_specs(snapshot.jobs, snapshot.units, cache),
        machine_specs(snapshot),
        snapshot.placements,
        settled(snapshot),
        strategy,
        drain_released(snapshot),
    )


def machine_specs(snapshot: Snapshot) -> list[MachineSpec]:
    """The machines as the scheduler sees them: effective metadata, cordoned or not."""
    return [
        MachineSpec(m, effective_metadata(snapshot, m), m in snapshot.cordons)
        for m in snapshot.machines
    ]


def settled(snapshot: Snapshot) -> set[tuple[str, str]]:
    """(unit, machine) for each unit its machine reports with the content the unit has now:
    a placed unit where it is placed, a Global unit where it runs. Never moved (or stopped)
    for room there."""
    out = set()
    for (name, machine_id), state in snapshot.states.items():
        job = snapshot.jobs.get(name)
        if job is None or state.hash != job.unit_hash:
            continue
        if snapshot.placements.get(name) == machine_id or (
            state.active in RUNNING_STATES and is_global(snapshot, job)
        ):
            out.add((name, machine_id))
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """One guarded write: `job` goes from machine `old` to `new` (None: not placed)."""

    job: str
    old: str | None
    new: str | None
    reason: str

    @property
    def action(self) -> Action:
        return Action.UNSCHEDULE if self.new is None else Action.SCHEDULE


def steps(plan: EnginePlan) -> list[Step]:
    """The plan as one write per job: a job that moves is moved in a single transaction, so it
    is never left unplaced (or placed twice) when one half of the move loses."""
    by_job: dict[str, list[Task]] = {}
    for task in plan.tasks:
        by_job.setdefault(task.job, []).append(task)
    out = []
    for job, tasks in by_job.items():
        old = next((t.machine_id for t in tasks if t.action is Action.UNSCHEDULE), None)
        new = next((t.machine_id for t in tasks if t.action is Action.SCHEDULE), None)
        reason = "; ".join(  # a drained unit's two halves say the same
            dict.fromkeys(t.reason.value + (f" ({t.detail})" if t.detail else "") for t in tasks)
        )
        out.append(Step(job, old, new, reason))
    return out


def record_won(view: ClusterView, step: Step, job: Job | None = None) -> None:
    """Record a write the engine won before its watch event arrives, so the next plan starts
    from it; skipped if the watch already moved the placement on (it is newer). `job`: the job
    the write copied to the new machine's agent (`placed/`), recorded with it."""
    if view.placements.get(step.job) != step.old:
        return
    if step.old is not None and step.old != step.new:
        view.delete(KeyKind.PLACED, (step.old, step.job))
    if step.new is None:
        view.delete(KeyKind.SCHEDULE, step.job)
    else:
        view.put(KeyKind.SCHEDULE, step.job, Placement(step.job, step.new))
        if job is not None:
            view.put(KeyKind.PLACED, (step.new, step.job), Assignment.of(job, step.new))
