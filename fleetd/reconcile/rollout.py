"""Rollouts: a new version (or a health-gated restart) of a unit rolled over its instances.

Pure. `begin` makes the document of a rollout from the cluster as it is (which instances it
covers, the versions, the policy); `plan_rollout` is the engine leader's step: given the
document and the cluster, the next document and what to write with it; `command` is what
`fleetctl rollout pause|resume|promote|undo` do to it. The shells only read, call, write and
log (fleetd/engine.py, fleetd/api/rollouts.py).

How a rollout moves (docs/rolling-updates.md):
- an instance is PENDING (on the previous version), UPDATING (told to run the new one; its
  agent judges its health and publishes it under the rollout's id), HEALTHY, FAILED,
  REVERTING, REVERTED or SKIPPED (its machine left, the unit moved or went);
- at most `UpdateMaxParallel` instances are UPDATING at once and, with a disruption budget,
  never so many that fewer than `MinAvailable` instances stay running; instances that are not
  running anyway go first;
- with `UpdateCanary=N`, N instances are updated, then the rollout waits (CANARY) for
  `promote`;
- an instance reported unhealthy fails the rollout: with auto-revert every touched instance
  returns to the previous version (the jobs too), else it stops (FAILED) where it is until
  `resume` (the failed instances are tried again) or `undo`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from fleetd.model import (
    JobState,
    Phase,
    Policy,
    Rollout,
    RolloutAction,
    RolloutState,
    Target,
    UnitState,
    short_id,
)
from fleetd.reconcile.gates import Health
from fleetd.reconcile.globals import is_global
from fleetd.reconcile.states import RUNNING_STATES
from fleetd.registry.fold import ClusterView, Event, Resync, Snapshot
from fleetd.registry.keys import KeyKind
from fleetd.rules.update import share
from fleetd.unit import Requirements, UnitFile
from fleetd.unit_names import UnitNameError, parse_name

__all__ = [
    "ROLLOUT_KINDS",
    "VERDICT_GRACE",
    "RolloutRefused",
    "RolloutStep",
    "Verb",
    "begin",
    "command",
    "covered_units",
    "next_due",
    "plan_rollout",
    "steps_due",
]

View = ClusterView | Snapshot


class RolloutRefused(ValueError):
    """A rollout that cannot begin, or a command it cannot take, with why (a user's words)."""


class Verb(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    UNDO = "undo"


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """The engine's next write for one rollout: the new document, and with it the restart
    requests of the instances a restart rollout starts judging and whether the jobs go back to
    the previous version."""

    rollout: Rollout
    restarts: tuple[Target, ...] = ()
    revert: bool = False
    changes: tuple[str, ...] = ()  # one line per change, for the log

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def covered_units(view: View, name: str) -> list[str]:
    """The units a rollout named `name` covers: a template's launched instances, else `name`."""
    try:
        parsed = parse_name(name)
    except UnitNameError:
        return [name]
    if not parsed.is_template:
        return [name]
    return sorted(
        n
        for n, job in view.jobs.items()
        if job.desired is JobState.LAUNCHED and _template(n) == name
    )


def _template(name: str) -> str:
    try:
        return parse_name(name).template
    except UnitNameError:
        return ""


def begin(
    view: View,
    name: str,
    action: RolloutAction,
    rollout_id: str,
    now: float,
    unit: UnitFile | None = None,
) -> Rollout | None:
    """The rollout of `unit` (a new version; None: a restart of the current one) over `name`:
    a Global unit on every machine that has it, a template's launched instances, or one unit
    where it is placed. None when no instance runs anywhere (an update then replaces the job
    at once: nothing runs to roll over). RolloutRefused with the reason otherwise."""
    units = covered_units(view, name)
    if not units:
        raise RolloutRefused(f"template {name} has no launched instance to roll out")
    hashes = {}
    for unit_name in units:
        job = view.jobs.get(unit_name)
        if job is None:
            raise RolloutRefused(f"unit {unit_name} does not exist")
        hashes[unit_name] = job.unit_hash
    if len(set(hashes.values())) > 1:
        versions = ", ".join(f"{n} {h[:7]}" for n, h in sorted(hashes.items()))
        raise RolloutRefused(
            f"the instances of {name} run different versions ({versions}): replace them one "
            f"by one (fleetctl rolling-replace INSTANCE)"
        )
    from_hash = next(iter(hashes.values()))
    to_hash = from_hash if unit is None else unit.hash
    if action is RolloutAction.UPDATE and to_hash == from_hash:
        raise RolloutRefused(f"{name} already runs this version ({to_hash[:7]})")
    content = unit if unit is not None else _content(view, from_hash)
    requirements = content.requirements(units[0]) if content is not None else Requirements()
    targets = tuple(_targets(view, units))
    if not targets:
        if action is RolloutAction.RESTART:
            raise RolloutRefused(f"{name} runs on no machine: nothing to restart")
        return None
    update, budget = requirements.update, requirements.budget
    policy = Policy(
        update.max_parallel,
        update.min_healthy,
        update.deadline,
        update.health_check,
        update.canary,
        update.auto_revert,
        budget.min_available if budget is not None else "",
    )
    return Rollout(name, rollout_id, action, from_hash, to_hash, policy, targets, started=now)


def _content(view: View, unit_hash: str) -> UnitFile | None:
    content = view.units.get(unit_hash)
    return content.unit if content is not None else None


def _targets(view: View, units: Iterable[str]) -> Iterable[Target]:
    for unit_name in units:
        job = view.jobs.get(unit_name)
        if job is None or job.desired is JobState.INACTIVE:
            continue
        if is_global(view, job):
            machines = sorted(
                m for (n, m), state in view.states.items() if n == unit_name and m in view.machines
            )
            yield from (Target(unit_name, m) for m in machines)
        elif (machine := view.placements.get(unit_name)) is not None:
            yield Target(unit_name, machine)


# ---- the engine's step

# What can move a rollout on: itself, what the agents publish, machines, jobs, placements.
ROLLOUT_KINDS = frozenset(
    {KeyKind.ROLLOUT, KeyKind.STATE, KeyKind.MACHINE, KeyKind.JOB, KeyKind.SCHEDULE}
)


def steps_due(view: View, events: Iterable[Event]) -> bool:
    """Whether a watch batch may move a running rollout on (none running: never)."""
    if all(r.state.finished for r in view.rollouts.values()):
        return False
    return any(isinstance(e, Resync) or e.kind in ROLLOUT_KINDS for e in events) or not events


def plan_rollout(rollout: Rollout, view: View, now: float) -> RolloutStep:
    """The next document of a running rollout, given the cluster (nothing changed: the same
    document and no change lines)."""
    if rollout.state.finished:
        return RolloutStep(rollout)
    changes: list[str] = []
    targets = list(rollout.targets)
    state, reason = rollout.state, rollout.reason

    cancelled = _cancelled(rollout, view)
    if cancelled:
        new = replace(rollout, state=RolloutState.CANCELLED, reason=cancelled, finished=now)
        return RolloutStep(new, changes=(f"cancelled: {cancelled}",))

    # what the machines say of the instances being judged, gone or moved
    for i, target in enumerate(targets):
        if target.phase in (Phase.HEALTHY, Phase.FAILED, Phase.REVERTED, Phase.SKIPPED):
            continue
        gone = _gone(target, view)
        if gone:
            targets[i] = target.at(Phase.SKIPPED, gone)
            changes.append(f"{_where(target)} skipped: {gone}")
            continue
        observed = view.states.get((target.unit, target.machine_id))
        if target.phase is Phase.UPDATING and _silent(rollout, target, observed, now):
            waited = _verdict_due(rollout, target) - target.since
            why = f"its machine said nothing of its health within {waited:g}s"
            targets[i] = target.at(Phase.FAILED, why)
            changes.append(f"{_where(target)} failed: {why}")
            if state in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.CANARY):
                state, reason = _failed(rollout, targets[i])
        elif target.phase is Phase.UPDATING and observed is not None:
            if observed.gate == rollout.id and observed.health == Health.HEALTHY:
                targets[i] = target.at(Phase.HEALTHY)
                changes.append(f"{_where(target)} healthy")
            elif observed.gate == rollout.id and observed.health == Health.UNHEALTHY:
                why = observed.health_reason or "unhealthy"
                targets[i] = target.at(Phase.FAILED, why)
                changes.append(f"{_where(target)} failed: {why}")
                if state in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.CANARY):
                    state, reason = _failed(rollout, targets[i])
        elif target.phase is Phase.REVERTING and _runs(observed, rollout.from_hash):
            targets[i] = target.at(Phase.REVERTED, target.reason)
            changes.append(f"{_where(target)} back on {rollout.from_hash[:7]}")

    revert = False
    if state is RolloutState.REVERTING and rollout.state is not RolloutState.REVERTING:
        revert = True  # the failure just came: every touched instance goes back
        for i, target in enumerate(targets):
            if target.phase.touched:
                targets[i] = target.at(Phase.REVERTING, target.reason)
        changes.append(f"reverting to {rollout.from_hash[:7]}: {reason}")
    elif state is RolloutState.FAILED and rollout.state is not RolloutState.FAILED:
        changes.append(f"stopped: {reason}")

    restarts: list[Target] = []
    waiting = ""
    if state is RolloutState.RUNNING:
        started, waiting = _next_batch(rollout, targets, view)
        for i in started:
            targets[i] = targets[i].at(Phase.UPDATING, since=now)
            changes.append(f"{_where(targets[i])} {_verb(rollout)}")
            if rollout.action is RolloutAction.RESTART:
                restarts.append(targets[i])
        if waiting and waiting != reason:
            changes.append(waiting)
        reason = waiting
        counts = _count(targets)
        if not counts[Phase.PENDING] and not counts[Phase.UPDATING]:
            state, reason = RolloutState.DONE, ""
            changes.append("done")
        elif (
            rollout.policy.canary
            and not rollout.promoted
            and counts[Phase.PENDING]
            and counts[Phase.HEALTHY] >= rollout.policy.canary
            and not counts[Phase.UPDATING]
        ):
            state = RolloutState.CANARY
            reason = f"{counts[Phase.HEALTHY]} canaries healthy: waiting for rollout promote"
            changes.append(reason)
    if state is RolloutState.REVERTING and not any(t.phase is Phase.REVERTING for t in targets):
        state = RolloutState.REVERTED
        changes.append("reverted")

    finished = now if state.finished else 0.0
    new = replace(rollout, targets=tuple(targets), state=state, reason=reason, finished=finished)
    if new == rollout:
        return RolloutStep(rollout)
    return RolloutStep(new, tuple(restarts), revert, tuple(changes) or ("progress",))


# How long past its deadline the engine waits for an instance's verdict before it takes the
# silence for a failure (an agent judges its deadline itself and says so; one that never
# answers — a fleetd too old for rollouts, a bug — must not stall the rollout forever).
VERDICT_GRACE = 30.0


def _verdict_due(rollout: Rollout, target: Target) -> float:
    return target.since + rollout.policy.deadline + VERDICT_GRACE


def _silent(rollout: Rollout, target: Target, state: UnitState | None, now: float) -> bool:
    """An instance updating for longer than its deadline and the grace with no verdict."""
    if not target.since or now < _verdict_due(rollout, target):
        return False
    return (
        state is None
        or state.gate != rollout.id
        or state.health
        not in (
            Health.HEALTHY,
            Health.UNHEALTHY,
        )
    )


def next_due(rollout: Rollout) -> float | None:
    """When the engine must look at `rollout` again even if nothing happens: the earliest
    verdict due of its instances updating (None: none)."""
    if rollout.state.finished:
        return None
    due = [
        _verdict_due(rollout, t) for t in rollout.targets if t.phase is Phase.UPDATING and t.since
    ]
    return min(due, default=None)


def _verb(rollout: Rollout) -> str:
    if rollout.action is RolloutAction.RESTART:
        return "restarting"
    return f"updating to {rollout.to_hash[:7]}"


def _where(target: Target) -> str:
    return f"{target.unit} on {short_id(target.machine_id)}"


def _count(targets: Iterable[Target]) -> dict[Phase, int]:
    out = dict.fromkeys(Phase, 0)
    for target in targets:
        out[target.phase] += 1
    return out


def _failed(rollout: Rollout, target: Target) -> tuple[RolloutState, str]:
    why = f"{target.unit} on {short_id(target.machine_id)}: {target.reason}"
    if rollout.policy.auto_revert and rollout.action is RolloutAction.UPDATE:
        return RolloutState.REVERTING, why
    return RolloutState.FAILED, why


def _cancelled(rollout: Rollout, view: View) -> str:
    """Why the rollout no longer applies: its units destroyed, or replaced otherwise."""
    units = {t.unit for t in rollout.targets}
    jobs = [view.jobs.get(u) for u in units]
    if all(j is None for j in jobs):
        return "its units were destroyed"
    expected = {rollout.to_hash, rollout.from_hash}
    for job in jobs:
        if job is not None and job.unit_hash not in expected:
            return f"{job.name} was replaced meanwhile (now {job.unit_hash[:7]})"
    return ""


def _gone(target: Target, view: View) -> str:
    if target.machine_id not in view.machines:
        return "its machine left the cluster"
    job = view.jobs.get(target.unit)
    if job is None:
        return "the unit was destroyed"
    if job.desired is JobState.INACTIVE:
        return "the unit was unloaded"
    if job.desired is not JobState.LAUNCHED:
        return "the unit was stopped"
    if not is_global(view, job):
        placed = view.placements.get(target.unit)
        if placed is not None and placed != target.machine_id:
            return f"the unit moved to {short_id(placed)}"
    elif (target.unit, target.machine_id) not in view.states:
        return "it no longer runs there"  # its metadata, or a conflict, keeps it away now
    return ""


def _runs(state: UnitState | None, unit_hash: str) -> bool:
    return state is not None and state.hash == unit_hash and state.active in RUNNING_STATES


def _next_batch(rollout: Rollout, targets: list[Target], view: View) -> tuple[list[int], str]:
    """Which pending instances start updating now (indices), and what holds the rest back."""
    counts = _count(targets)
    total = len(targets) - counts[Phase.SKIPPED]
    pending = [i for i, t in enumerate(targets) if t.phase is Phase.PENDING]
    if not pending:
        return [], ""
    policy = rollout.policy
    slots = max(1, share(policy.max_parallel, total)) - counts[Phase.UPDATING]
    if policy.canary and not rollout.promoted:
        slots = min(slots, policy.canary - counts[Phase.UPDATING] - counts[Phase.HEALTHY])
        if slots <= 0:
            return [], ""
    if slots <= 0:
        return [], ""

    def running(target: Target) -> bool:
        hash_now = rollout.hash_for(target)
        return _runs(view.states.get((target.unit, target.machine_id)), hash_now)

    # instances that are not running anyway go first: updating them takes nothing down
    pending.sort(key=lambda i: (running(targets[i]), targets[i].unit, targets[i].machine_id))
    chosen: list[int] = []
    if policy.min_available:
        required = min(total, share(policy.min_available, total))
        available = sum(
            1 for t in targets if t.phase in (Phase.PENDING, Phase.HEALTHY) and running(t)
        )
        for i in pending:
            if len(chosen) == slots:
                break
            if running(targets[i]):
                if available - 1 < required:
                    continue
                available -= 1
            chosen.append(i)
        if not chosen and not counts[Phase.UPDATING]:
            return [], (
                f"waiting: DisruptionBudget MinAvailable={policy.min_available} needs "
                f"{required} of {total} running, {available} are"
            )
        return chosen, ""
    return pending[:slots], ""


# ---- the user's commands


def command(rollout: Rollout, verb: Verb, now: float) -> tuple[Rollout, bool]:
    """`fleetctl rollout VERB`: the new document and whether the jobs go back to the previous
    version with it (undo of an update). RolloutRefused when the rollout cannot take it."""
    state = rollout.state
    if state.finished:
        raise RolloutRefused(
            f"the rollout of {rollout.name} is {state}"
            + (
                f": to go back, submit the previous version again "
                f"(fleetctl rolling-replace {rollout.name})"
                if verb is Verb.UNDO and state is RolloutState.DONE
                else ""
            )
        )
    match verb:
        case Verb.PAUSE if state in (RolloutState.RUNNING, RolloutState.CANARY):
            return replace(rollout, state=RolloutState.PAUSED, reason="paused"), False
        case Verb.RESUME if state is RolloutState.PAUSED:
            return replace(rollout, state=RolloutState.RUNNING, reason=""), False
        case Verb.RESUME if state is RolloutState.FAILED:  # try the failed instances again
            targets = tuple(
                t.at(Phase.PENDING) if t.phase is Phase.FAILED else t for t in rollout.targets
            )
            return replace(rollout, targets=targets, state=RolloutState.RUNNING, reason=""), False
        case Verb.PROMOTE if state in (RolloutState.CANARY, RolloutState.RUNNING) and not (
            rollout.promoted
        ):
            return replace(rollout, state=RolloutState.RUNNING, reason="", promoted=True), False
        case Verb.UNDO if state is not RolloutState.REVERTING:
            if rollout.action is RolloutAction.RESTART:
                new = replace(rollout, state=RolloutState.CANCELLED, reason="undone", finished=now)
                return new, False
            targets = tuple(
                t.at(Phase.REVERTING) if t.phase.touched else t for t in rollout.targets
            )
            new = replace(rollout, targets=targets, state=RolloutState.REVERTING, reason="undone")
            if not any(t.phase is Phase.REVERTING for t in targets):
                new = replace(new, state=RolloutState.REVERTED, finished=now)
            return new, True
    raise RolloutRefused(f"the rollout of {rollout.name} is {state}: it cannot be {_past(verb)}")


def _past(verb: Verb) -> str:
    return {
        Verb.PAUSE: "paused",
        Verb.RESUME: "resumed",
        Verb.PROMOTE: "promoted",
        Verb.UNDO: "undone",
    }[verb]
