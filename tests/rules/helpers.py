"""Small builders shared by the rule tables: a unit's requirements from [X-Fleet] lines, a job,
a plan applied to placements."""

from __future__ import annotations

from collections.abc import Mapping

from fleetd.model import JobState
from fleetd.reconcile.engine import Action, EnginePlan
from fleetd.reconcile.scheduler import JobSpec
from fleetd.rules import Requirements
from fleetd.unit import parse_unit


def req(xfleet: str, name: str = "u.service") -> Requirements:
    return parse_unit("[X-Fleet]\n" + xfleet + "\n").requirements(name)


def job(name: str, xfleet: str = "", desired: JobState = JobState.LAUNCHED) -> JobSpec:
    return JobSpec(name, desired, req(xfleet, name))


def jobs_of(*specs: JobSpec) -> dict[str, JobSpec]:
    return {j.name: j for j in specs}


def applied(plan: EnginePlan, placements: Mapping[str, str]) -> dict[str, str]:
    """Placements after the plan's tasks."""
    out = dict(placements)
    for task in plan.tasks:
        if task.action is Action.UNSCHEDULE:
            assert out.pop(task.job) == task.machine_id
        else:
            out[task.job] = task.machine_id
    return out
