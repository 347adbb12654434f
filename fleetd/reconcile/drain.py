"""Cordon and drain: a machine that takes no new units, and its units moved elsewhere one at a
time (docs/architecture.md, "Cordon and drain").

Pure. `begin_drain` makes the document of a drain from the cluster as it is (every non-Global
unit placed on the machine is a target); `plan_drain` is the engine leader's step: given the
document and the cluster, the next document and the units it releases; `released` is what the
engine's planner reads of the drains (the units to move off their machine now); the API's
requests are read by `read_machine_id` and `read_drain`. The shells only read, call, write and
log (fleetd/engine.py, fleetd/api/cordons.py).

How a drain moves:
- a target is PENDING (still on the drained machine), UPDATING (released: the engine moves it;
  `machine_id` is "" until it is placed elsewhere, then the machine it moved to, whose agent
  judges its health under the drain's id), HEALTHY, FAILED or SKIPPED (destroyed, unloaded,
  or moved off the machine by something else);
- one unit at a time: the next is released once the last is healthy where it went; units that
  do not run anyway go first (moving them takes nothing down);
- with a `DisruptionBudget=MinAvailable=N|N%`, a running unit is released only if its group
  (a template's instances, else the unit alone) keeps N running without it; else the drain
  waits and `reason` says so;
- a released unit that no other machine can take stays where it is (the engine's plan holds
  it there) and the drain waits with the scheduler's reason;
- a unit reported unhealthy where it went stops the drain (the target FAILED, `reason` says
  which and why); the machine stays cordoned. `fleetctl drain` again moves what is left (a
  fresh drain), `fleetctl uncordon` ends it;
- no target PENDING or UPDATING: DRAINED. With `stop_globals` the machine's agent then runs no
  Global unit (`stops_globals`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from fleetd.model import Cordon, DrainState, JobState, Phase, Target, short_id
from fleetd.reconcile.gates import Health
from fleetd.reconcile.globals import is_global
from fleetd.reconcile.refuse import Refuse
from fleetd.registry.fold import ClusterView, Event, Resync, Snapshot
from fleetd.registry.keys import KeyKind
from fleetd.rules.update import DisruptionBudget
from fleetd.unit_names import UnitNameError, parse_name

__all__ = [
    "DRAIN_KINDS",
    "DrainStep",
    "begin_drain",
    "cordon_json",
    "drain_over",
    "drain_progress",
    "drains_due",
    "plan_drain",
    "read_drain",
    "read_machine_id",
    "released",
    "stops_globals",
]

View = ClusterView | Snapshot

# What can move a drain on: itself, what the agents publish, machines, jobs, placements.
DRAIN_KINDS = frozenset(
    {KeyKind.CORDON, KeyKind.STATE, KeyKind.MACHINE, KeyKind.JOB, KeyKind.SCHEDULE}
)


@dataclass(frozen=True, slots=True)
class DrainStep:
    """The engine's next write for one drain: the new document, the units it releases, and
    one (unit, what happened) per change for the log ("" for the drain as a whole)."""

    cordon: Cordon
    released: tuple[str, ...] = ()
    changes: tuple[tuple[str, str], ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)


# ---- what the others read of the drains


def released(view: View) -> dict[str, str]:
    """The units a drain released that are still on its machine (unit → that machine): the
    engine's planner moves them off it."""
    out: dict[str, str] = {}
    for cordon in view.cordons.values():
        if cordon.state is not DrainState.DRAINING:
            continue
        for target in cordon.targets:
            if (
                target.phase is Phase.UPDATING
                and not target.machine_id
                and view.placements.get(target.unit) == cordon.machine_id
            ):
                out[target.unit] = cordon.machine_id
    return out


def stops_globals(view: View, machine_id: str) -> bool:
    """Whether the machine runs no Global unit: drained, with `--stop-globals`."""
    cordon = view.cordons.get(machine_id)
    return cordon is not None and cordon.state is DrainState.DRAINED and cordon.stop_globals


def drains_due(view: View, events: Iterable[Event]) -> bool:
    """Whether a watch batch may move a drain on (none draining: never)."""
    if not any(c.state is DrainState.DRAINING for c in view.cordons.values()):
        return False
    return any(isinstance(e, Resync) or e.kind in DRAIN_KINDS for e in events) or not events


def drain_over(cordon: Cordon) -> bool:
    """Nothing more happens to it without the user: not draining, or stopped by a failure."""
    return cordon.state is not DrainState.DRAINING or any(
        t.phase is Phase.FAILED for t in cordon.targets
    )


def drain_progress(cordon: Cordon) -> str:
    """`2/5 moved, 1 in progress, 2 pending` (and skipped, failed when there are)."""
    counts = _count(cordon.targets)
    parts = [
        f"{counts[Phase.HEALTHY]}/{len(cordon.targets)} moved",
        f"{counts[Phase.UPDATING]} in progress",
        f"{counts[Phase.PENDING]} pending",
    ]
    parts += [f"{counts[p]} {p}" for p in (Phase.SKIPPED, Phase.FAILED) if counts[p]]
    return ", ".join(parts)


def cordon_json(cordon: Cordon) -> dict[str, object]:
    """A cordon as the API shows it: the document and its progress line."""
    return {**cordon.to_dict(), "progress": drain_progress(cordon)}


# ---- the beginning


def drain_targets(view: View, machine_id: str) -> list[str]:
    """The units to move off the machine: placed there, wanting to run, not Global."""
    return sorted(
        name
        for name, placed in view.placements.items()
        if placed == machine_id
        and (job := view.jobs.get(name)) is not None
        and job.desired is not JobState.INACTIVE
        and not is_global(view, job)
    )


def begin_drain(
    view: View,
    machine_id: str,
    existing: Cordon | None,
    drain_id: str,
    now: float,
    stop_globals: bool,
) -> Cordon | None:
    """The document of a drain of `machine_id` (cordoned since `existing.since`, or now); None
    when it is draining already (that drain goes on, untouched). A drained machine, or one
    whose drain stopped on a failure, is drained again: what is left there now."""
    if existing is not None and existing.state is DrainState.DRAINING and not drain_over(existing):
        return None
    since = existing.since if existing is not None else now
    targets = tuple(Target(name, "") for name in drain_targets(view, machine_id))
    state = DrainState.DRAINING if targets else DrainState.DRAINED
    return Cordon(machine_id, state, drain_id, targets, stop_globals, "", since)


# ---- the engine's step


def plan_drain(
    cordon: Cordon, view: View, now: float, held: Mapping[str, str] | None = None
) -> DrainStep:
    """The next document of a drain at `now`, given the cluster and `held`: the released units
    the engine's last plan could not place elsewhere, with the scheduler's reason (kept where
    they were, or waiting for a machine). Nothing changed: the same document and no change
    lines."""
    if cordon.state is not DrainState.DRAINING:
        return DrainStep(cordon)
    held = held or {}
    me, changes = cordon.machine_id, []
    targets = list(cordon.targets)
    known = {t.unit for t in targets}
    # a unit placed there after the drain began (the engine's plan was made before the cordon)
    for name in drain_targets(view, me):
        if name not in known:
            targets.append(Target(name, ""))
            changes.append((name, "added: placed there after the drain began"))

    waiting = ""
    for i, target in enumerate(targets):
        if target.phase not in (Phase.PENDING, Phase.UPDATING):
            continue
        gone = _gone(view, target.unit)
        placed = view.placements.get(target.unit)
        if gone:
            targets[i] = target.at(Phase.SKIPPED, gone)
            changes.append((target.unit, f"skipped: {gone}"))
            continue
        if target.phase is Phase.PENDING:
            if placed != me:
                why = f"moved to {short_id(placed)}" if placed else "no longer placed there"
                targets[i] = target.at(Phase.SKIPPED, why)
                changes.append((target.unit, f"skipped: {why}"))
            continue
        # released: follow it to the machine it went to, and that machine's verdict
        where = placed if placed is not None and placed != me else ""
        if where != target.machine_id:
            targets[i] = target = Target(target.unit, where, Phase.UPDATING)
            changes.append(
                (target.unit, f"moved to {short_id(where)}" if where else "waiting for a machine")
            )
        if not where:
            if target.unit in held:
                waiting = f"waiting: {target.unit} has no other machine: {held[target.unit]}"
            continue
        observed = view.states.get((target.unit, where))
        if observed is None or observed.gate != cordon.id:
            continue
        if observed.health == Health.HEALTHY:
            targets[i] = target.at(Phase.HEALTHY)
            changes.append((target.unit, f"healthy on {short_id(where)}"))
        elif observed.health == Health.UNHEALTHY:
            why = observed.health_reason or "unhealthy"
            targets[i] = target.at(Phase.FAILED, why)
            changes.append((target.unit, f"failed on {short_id(where)}: {why}"))

    state, release = cordon.state, ()
    failed = next((t for t in targets if t.phase is Phase.FAILED), None)
    counts = _count(targets)
    if failed is not None:
        reason = (
            f"stopped: {failed.unit} failed on {short_id(failed.machine_id)}: {failed.reason}; "
            f"the machine stays cordoned (fleetctl drain to move what is left, fleetctl "
            f"uncordon to end)"
        )
    elif not counts[Phase.PENDING] and not counts[Phase.UPDATING]:
        state, reason = DrainState.DRAINED, ""
        changes.append(("", "drained"))
    elif counts[Phase.UPDATING]:
        reason = waiting
    else:
        chosen, reason = _next(targets, view)
        if chosen is not None:
            targets[chosen] = targets[chosen].at(Phase.UPDATING)
            release = (targets[chosen].unit,)
            changes.append((targets[chosen].unit, "released: moving off the machine"))
    if reason != cordon.reason and reason:
        changes.append(("", reason))
    new = replace(cordon, targets=tuple(targets), state=state, reason=reason)
    if new == cordon:
        return DrainStep(cordon)
    return DrainStep(new, release, tuple(changes) or (("", "progress"),))


def _count(targets: Iterable[Target]) -> dict[Phase, int]:
    out = dict.fromkeys(Phase, 0)
    for target in targets:
        out[target.phase] += 1
    return out


def _gone(view: View, unit: str) -> str:
    job = view.jobs.get(unit)
    if job is None:
        return "the unit was destroyed"
    if job.desired is JobState.INACTIVE:
        return "the unit was unloaded"
    if is_global(view, job):
        return "the unit is Global now"
    return ""


def _running(view: View) -> set[str]:
    """The units some machine reports active."""
    return {name for (name, _), state in view.states.items() if state.active == "active"}


def _next(targets: list[Target], view: View) -> tuple[int | None, str]:
    """The pending target to release now (its index), or None and what holds them back."""
    running = _running(view)
    pending = [i for i, t in enumerate(targets) if t.phase is Phase.PENDING]
    # units that do not run anyway go first: moving them takes nothing down
    pending.sort(key=lambda i: (targets[i].unit in running, targets[i].unit))
    first_wait = ""
    for i in pending:
        wait = _budget_wait(view, targets[i].unit, running)
        if not wait:
            return i, ""
        first_wait = first_wait or wait
    return None, first_wait


def _budget_wait(view: View, unit: str, running: set[str]) -> str:
    """Why releasing `unit` would break its group's disruption budget, or ""."""
    if unit not in running:
        return ""
    budget = _budget(view, unit)
    if budget is None:
        return ""
    group_name, group = _group(view, unit)
    up = sum(1 for name in group if name in running)
    if up - 1 >= budget.required(len(group)):
        return ""
    return f"waiting: {budget} of {group_name}: {up} running"


def _budget(view: View, unit: str) -> DisruptionBudget | None:
    job = view.jobs.get(unit)
    content = view.units.get(job.unit_hash) if job is not None else None
    return content.unit.requirements(unit).budget if content is not None else None


def _group(view: View, unit: str) -> tuple[str, list[str]]:
    """A template's instances that want to run (the template's name), else the unit alone."""
    try:
        template = parse_name(unit).template
    except UnitNameError:
        template = ""
    if not template or template == unit:
        return unit, [unit]
    return template, [
        name
        for name, job in view.jobs.items()
        if job.desired is not JobState.INACTIVE and _template(name) == template
    ]


def _template(name: str) -> str:
    try:
        return parse_name(name).template
    except UnitNameError:
        return ""


# ---- the API's requests


def read_machine_id(text: str) -> str | Refuse:
    """A machine ID from a URL: non-empty, no whitespace or control characters."""
    if not text:
        return Refuse(400, "machine ID must not be empty")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        return Refuse(400, f"invalid machine ID {text!r}: it may not hold whitespace or control "
                      f"characters")  # fmt: skip
    return text


def read_drain(body: object) -> bool | Refuse:
    """`POST x/machines/{id}/drain`: the body's `stopGlobals` (default false)."""
    if not isinstance(body, dict):
        return Refuse(400, "unable to decode body: expected a JSON object")
    unknown = sorted(set(body) - {"stopGlobals"})
    if unknown:
        return Refuse(400, f"unknown field {unknown[0]!r} in body: expected stopGlobals")
    stop = body.get("stopGlobals", False)
    if not isinstance(stop, bool):
        return Refuse(400, "unable to decode body: stopGlobals must be true or false")
    return stop
