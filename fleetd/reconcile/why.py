"""Why is a unit (not) running where it is? `fleetctl why UNIT`, `GET /fleet/v1/x/why/{name}`,
and every unplaced unit's reason at once (`GET /fleet/v1/x/unplaced`, `list-unit-files -l`).

Pure: from a registry snapshot and a unit name, the explanation as plain data
(`fleetd/reconcile/explanation.py`: `Explanation`, `to_dict` for JSON, the lines fleetctl
prints). The scheduler's own pieces answer: the engine's plan (`plan_for`) gives an unplaced
unit's reason sentence; the rules
(`every_refusal`, `fleetd.rules.refusals`) say which machines each rule refuses, evaluated on
*every* machine (not the candidates a plan narrows to) against the cluster as the engine sees
it (`ClusterState` of all jobs and placements); a Global unit is judged per machine as every
agent judges it (`globals_on`, `MachineAlone`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetd.model import JobState, short_id
from fleetd.reconcile.engine import EnginePlan, job_specs, machine_specs, plan_for, settled
from fleetd.reconcile.explanation import (
    Example,
    Explanation,
    GlobalVerdict,
    Kind,
    MachineRef,
    RuleCheck,
    RuleRejections,
)
from fleetd.reconcile.globals import MachineAlone, globals_on, runs_globally
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.scheduler import ClusterState, JobSpec, MachineSpec, every_refusal
from fleetd.reconcile.waiting import current_state
from fleetd.registry.fold import Snapshot
from fleetd.rules import Rejection, Requirements, Term, refusals
from fleetd.unit_names import UnitNameError, validate_name

__all__ = [
    "EXAMPLES",
    "Example",
    "Explanation",
    "GlobalVerdict",
    "Kind",
    "MachineRef",
    "RuleCheck",
    "RuleRejections",
    "explain",
    "read_name",
    "unplaced_reasons",
]

EXAMPLES = 3  # machines shown per rule that rejected some; the rest are counted
_MISSING = "its unit file is missing from the registry"  # a job whose content is gone


def read_name(name: str) -> str | Refuse:
    """The unit name a request asks about, or 400 with fleet's name error (before any read)."""
    try:
        validate_name(name)
    except UnitNameError as err:
        return Refuse(400, str(err))
    return name


# ---- the explanation ------------------------------------------------------------------------


def explain(snapshot: Snapshot, name: str) -> Explanation | Refuse:
    """Why `name` runs where it does (or nowhere), as the registry stands in `snapshot`."""
    job = snapshot.jobs.get(name)
    if job is None:
        return Refuse(404, f"Unit {name} does not exist.")
    desired, current = job.desired.value, current_state(snapshot, job)
    if job.desired is JobState.INACTIVE:
        return Explanation(name, Kind.INACTIVE, desired, current, "its desired state is inactive")
    cache: dict[str, Any] = {}
    specs = job_specs(snapshot.jobs, snapshot.units, cache)
    spec = specs.get(name)
    if spec is None:  # its content is missing: nothing can be read of its rules
        return Explanation(name, Kind.UNPLACED, desired, current, _MISSING)
    machines = sorted(machine_specs(snapshot), key=lambda m: m.id)  # cordoned ones said so
    if spec.requirements.is_global:
        return _global(snapshot, spec, specs, machines, current)
    state = ClusterState(machines, specs, snapshot.placements, settled(snapshot))
    here = snapshot.placements.get(name)
    if here is not None and here in state.machines:
        return _placed(snapshot, spec, state, here, current)
    plan = plan_for(snapshot, cache)
    return _unplaced(snapshot, spec, state, plan, current)


def unplaced_reasons(snapshot: Snapshot) -> dict[str, str]:
    """Every unit that wants a machine (desired loaded or launched, not Global) and has none
    alive, with the reason — the planner is run only when there is one."""
    wanting = [name for name in sorted(snapshot.jobs) if _wants_machine(snapshot, name)]
    if not wanting:
        return {}
    plan = plan_for(snapshot, {})
    return {
        name: plan.unplaced.get(name)
        or (_MISSING if snapshot.jobs[name].unit_hash not in snapshot.units else _not_yet(snapshot))
        for name in wanting
    }


def _wants_machine(snapshot: Snapshot, name: str) -> bool:
    job = snapshot.jobs[name]
    if job.desired is JobState.INACTIVE or snapshot.placements.get(name) in snapshot.machines:
        return False
    content = snapshot.units.get(job.unit_hash)
    return content is None or not content.unit.requirements(name).is_global


def _not_yet(snapshot: Snapshot) -> str:
    """The reason of a unit a machine can take, that has none yet."""
    if snapshot.leader is None:
        return "no engine leads the cluster: a machine can take it, nobody places it"
    return "not placed yet: a machine can take it, the engine has not placed it"


def _ref(snapshot: Snapshot, machine_id: str) -> MachineRef:
    machine = snapshot.machines.get(machine_id)
    return MachineRef(machine_id, machine.public_ip if machine is not None else "")


def _unplaced(
    snapshot: Snapshot, spec: JobSpec, state: ClusterState, plan: EnginePlan, current: str | None
) -> Explanation:
    """Every rule over every machine: how many it refused, with a few of them."""
    terms = spec.requirements.terms
    refused: dict[str, list[Example]] = {}
    order: dict[str, tuple[int, int]] = {}
    refusing: set[Term] = set()
    feasible = 0
    for machine_id in sorted(state.machines):
        found = every_refusal(spec, machine_id, state)
        feasible += not found
        seen: set[str] = set()
        for rejection in found:
            refusing.add(rejection.term)
            heading = rejection.heading
            if heading in seen:
                continue  # one rule refusing one machine twice (two neighbours) counts once
            seen.add(heading)
            refused.setdefault(heading, []).append(Example(short_id(machine_id), rejection.detail))
            order.setdefault(heading, (_rank(rejection, terms), len(order)))
    total = len(state.machines)
    rejections = [
        RuleRejections(h, len(refused[h]), total, tuple(refused[h][:EXAMPLES]))
        for h in sorted(refused, key=order.__getitem__)
    ]
    if total:  # the unit's rules that refused no machine, so every rule is accounted for
        rejections += [RuleRejections(str(t), 0, total) for t in terms if t not in refusing]
    reason = plan.unplaced.get(spec.name) or _not_yet(snapshot)
    return Explanation(
        spec.name, Kind.UNPLACED, spec.desired.value, current, reason,
        machines=total, feasible=feasible, rejections=tuple(rejections),
    )  # fmt: skip


def _rank(rejection: Rejection, terms: tuple[Term, ...]) -> int:
    """The unit's own rules in their order, then its neighbours' objections."""
    return terms.index(rejection.term) if rejection.term in terms else len(terms)


def _placed(
    snapshot: Snapshot, spec: JobSpec, state: ClusterState, here: str, current: str | None
) -> Explanation:
    """Every rule of the unit on its machine, the machines that may take it, the ranking."""
    checks: list[RuleCheck] = []
    for term in spec.requirements.terms:
        checks += [
            RuleCheck(s.heading, s.holds, s.seen) for s in term.standing(spec.name, here, state)
        ]
    for owner, term in state.judges_on(here):
        if owner != spec.name and (r := term.objects_to(owner, spec.name, here, state)):
            checks.append(RuleCheck(r.heading, False, r.detail))
    feasible = [m for m in sorted(state.machines) if not every_refusal(spec, m, state)]
    return Explanation(
        spec.name, Kind.PLACED, spec.desired.value, current,
        machine=_ref(snapshot, here), machines=len(state.machines), feasible=len(feasible),
        rules=tuple(checks), ranking=_ranking(spec, state, here, feasible),
    )  # fmt: skip


def _units(n: int) -> str:
    return "unit" if n == 1 else "units"


def _ranking(spec: JobSpec, state: ClusterState, here: str, feasible: list[str]) -> str:
    """How `here` came first among the feasible machines: least loaded (fleet's), or a ranking
    rule's tier first (Spread). Loads count the units there besides this one."""
    if here not in feasible:
        return ""

    def others(machine_id: str) -> int:
        return state.load(machine_id) - (machine_id == here)

    loads = sorted(others(m) for m in feasible)
    n = others(here)
    least = (
        f"least loaded first, ties by machine ID: {n} other {_units(n)} there "
        f"(the feasible machines have {loads[0]} to {loads[-1]})"
    )
    ranker = spec.requirements.ranker
    if ranker is None:
        return least
    tiers = ranker.tiers(spec.name, state)
    tier = next((i for i, t in enumerate(tiers) if any(here in ids for ids in t)), 0)
    where = ranker.seen(spec.name, here, state)
    return f"{ranker}: tier {tier + 1} of {len(tiers)} ({where}); then {least}"


def _global(
    snapshot: Snapshot,
    spec: JobSpec,
    specs: Mapping[str, JobSpec],
    machines: list[MachineSpec],
    current: str | None,
) -> Explanation:
    """Per machine, as its agent decides: the Global unit runs there, or which rules keep it
    off (its own, or those of the units placed there or of Global units admitted before it)."""
    candidates = {
        n: s.requirements for n, s in specs.items() if runs_globally(s.desired, s.requirements)
    }
    placed_on: dict[str, dict[str, Requirements]] = {}
    for name, machine_id in snapshot.placements.items():
        if name in specs:
            placed_on.setdefault(machine_id, {})[name] = specs[name].requirements
    verdicts = []
    for machine in machines:
        placed = placed_on.get(machine.id, {})
        admitted = globals_on(machine.metadata, candidates, placed)
        ref = _ref(snapshot, machine.id)
        if spec.name in admitted:
            reported = snapshot.states.get((spec.name, machine.id))
            state = f"{reported.active}/{reported.sub}" if reported is not None else ""
            verdicts.append(GlobalVerdict(ref, True, state))
            continue
        alone = MachineAlone(machine.metadata, placed)
        for name in admitted:
            if name < spec.name:  # admitted before it, by name
                alone.add(name, candidates[name])
        found = refusals(spec.name, spec.requirements.terms, ".", alone)
        verdicts.append(
            GlobalVerdict(ref, False, kept_off_by=tuple((r.heading, r.detail) for r in found))
        )
    return Explanation(
        spec.name, Kind.GLOBAL, spec.desired.value, current,
        machines=len(machines), on_machines=tuple(verdicts),
    )  # fmt: skip
