"""The agents' copies the engine leader keeps (`plan_index`): a table of views, what to write and
what to drop. Pure: no etcd."""

from __future__ import annotations

import pytest

from fleetd.model import Assignment, GlobalJob, Job, JobState, UnitContent
from fleetd.reconcile.engine import job_specs
from fleetd.reconcile.index import IndexPlan, plan_index
from fleetd.registry.fold import Snapshot
from fleetd.unit import parse_unit

PLAIN = UnitContent(parse_unit("[Service]\nExecStart=/bin/true\n"))
GLOBAL = UnitContent(parse_unit("[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n"))
L, R = JobState.LAUNCHED, JobState.LOADED


def job(name: str, content: UnitContent = PLAIN, desired: JobState = L) -> Job:
    return Job(name, content.hash, desired)


def a(name: str, machine: str, content: UnitContent = PLAIN, desired: JobState = L) -> Assignment:
    return Assignment(name, machine, content.hash, desired)


def g(name: str, content: UnitContent = GLOBAL, desired: JobState = L) -> GlobalJob:
    return GlobalJob(name, content.hash, desired)


def view(jobs=(), placements=None, assignments=(), global_jobs=(), contents=(PLAIN, GLOBAL)):
    return Snapshot(
        7,
        jobs={j.name: j for j in jobs},
        units={c.hash: c for c in contents},
        placements=placements or {},
        assignments={(x.machine_id, x.name): x for x in assignments},
        global_jobs={x.name: x for x in global_jobs},
    )


def plan(v: Snapshot) -> IndexPlan:
    return plan_index(v, {n: (v.jobs[n], s) for n, s in job_specs(v.jobs, v.units).items()})


CASES = {
    "nothing": (view(), IndexPlan()),
    "in step": (
        view([job("a.service")], {"a.service": "m1"}, [a("a.service", "m1")]),
        IndexPlan(),
    ),
    "a registry with no copies (the migration): each placement copied": (
        view([job("a.service"), job("b.service", desired=R)],
             {"a.service": "m1", "b.service": "m2"}),
        IndexPlan(put=(a("a.service", "m1"), a("b.service", "m2", desired=R))),
    ),
    "the desired state changed: the copy follows": (
        view([job("a.service", desired=R)], {"a.service": "m1"}, [a("a.service", "m1")]),
        IndexPlan(put=(a("a.service", "m1", desired=R),)),
    ),
    "the content changed: the copy follows": (
        view([job("a.service", GLOBAL)], {"a.service": "m1"}, [a("a.service", "m1")]),
        IndexPlan(put=(a("a.service", "m1", GLOBAL),), put_global=(g("a.service"),)),
    ),
    "moved: the old machine's copy goes": (
        view([job("a.service")], {"a.service": "m2"}, [a("a.service", "m1")]),
        IndexPlan(put=(a("a.service", "m2"),), drop=(("m1", "a.service"),)),
    ),
    "unplaced: its copy goes": (
        view([job("a.service")], {}, [a("a.service", "m1")]),
        IndexPlan(drop=(("m1", "a.service"),)),
    ),
    "destroyed: its copies go": (
        view([], {}, [a("a.service", "m1")], [g("w.service")]),
        IndexPlan(drop=(("m1", "a.service"),), drop_global=("w.service",)),
    ),
    "a Global unit: copied for everyone": (
        view([job("w.service", GLOBAL)]),
        IndexPlan(put_global=(g("w.service"),)),
    ),
    "a Global unit in step": (
        view([job("w.service", GLOBAL)], global_jobs=[g("w.service")]),
        IndexPlan(),
    ),
    "a Global unit stopped: its copy says so": (
        view([job("w.service", GLOBAL, R)], global_jobs=[g("w.service")]),
        IndexPlan(put_global=(g("w.service", desired=R),)),
    ),
    "no longer Global: its Global copy goes": (
        view([job("w.service")], global_jobs=[g("w.service")]),
        IndexPlan(drop_global=("w.service",)),
    ),
    "content unknown: its copies are left as they are": (
        view([job("w.service", GLOBAL)], {}, [a("w.service", "m1")], [g("w.service", PLAIN)],
             contents=()),
        IndexPlan(),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_plan_index(name: str) -> None:
    given, expected = CASES[name]
    assert plan(given) == expected


def test_a_plan_counts_and_is_false_when_empty() -> None:
    assert not IndexPlan()
    p = IndexPlan(put=(a("a.service", "m1"),), drop_global=("w.service",))
    assert p and len(p) == 2


def test_a_spec_of_another_version_leaves_the_global_copy_be() -> None:
    """The engine's spec cache may hold the job of the last plan: only a spec of this very job
    says whether it is Global."""
    v = view([job("w.service", GLOBAL)])
    stale = {"w.service": (job("w.service", GLOBAL, R), job_specs(v.jobs, v.units)["w.service"])}
    assert plan_index(v, stale) == IndexPlan()
