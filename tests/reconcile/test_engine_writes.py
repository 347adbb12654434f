"""Around the engine's planner: its input read from the registry (job specs, kept while a job is
the same object), its plan as one guarded write per job, and won writes recorded in the view."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from fleetd.model import DynamicMetadata, Job, JobState, Machine, Placement, UnitContent
from fleetd.reconcile.engine import (
    Action,
    EnginePlan,
    Reason,
    Step,
    Task,
    job_specs,
    plan_engine,
    plan_for,
    record_won,
    steps,
)
from fleetd.registry import Changed, ClusterView, KeyKind, Snapshot
from fleetd.unit import parse_unit
from tests.reconcile.test_engine_plan import clusters, result
from tests.seed import seed_unit

HELLO = seed_unit("hello.service")
DB = parse_unit("[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=role=db\n")
M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
UNITS = {HELLO.hash: UnitContent(HELLO), DB.hash: UnitContent(DB)}


def job(name: str, unit=HELLO, desired: JobState = JobState.LAUNCHED) -> Job:
    return Job(name, unit.hash, desired)


# ---- job specs and their cache


def test_job_specs_read_each_jobs_requirements_from_its_content() -> None:
    specs = job_specs({"db.service": job("db.service", DB)}, UNITS)
    assert specs["db.service"].requirements == DB.requirements("db.service")
    assert specs["db.service"].desired is JobState.LAUNCHED


def test_a_job_whose_content_is_missing_is_left_out() -> None:
    # a corrupt or racing write: without its requirements the job cannot be scheduled
    cache: dict = {}
    jobs = {"lost.service": Job("lost.service", "f" * 40, JobState.LAUNCHED)}
    assert job_specs(jobs, UNITS, cache) == {}
    assert cache == {}


def test_a_spec_is_kept_while_the_job_is_the_same_object() -> None:
    hello = job("hello.service")
    cache: dict = {}
    first = job_specs({"hello.service": hello}, UNITS, cache)
    # the content is not even looked at again: the cached spec is reused as it is
    again = job_specs({"hello.service": hello}, {}, cache)
    assert again["hello.service"] is first["hello.service"]


def test_a_job_written_again_gets_a_new_spec() -> None:
    cache: dict = {}
    job_specs({"hello.service": job("hello.service")}, UNITS, cache)
    loaded = job("hello.service", desired=JobState.LOADED)  # a new object: a new document
    specs = job_specs({"hello.service": loaded}, UNITS, cache)
    assert specs["hello.service"].desired is JobState.LOADED
    assert cache["hello.service"][0] is loaded


@pytest.mark.parametrize(
    ("second", "kept"),
    [
        pytest.param({}, set(), id="job-destroyed"),
        pytest.param({"b.service": job("b.service")}, {"b.service"}, id="other-job-kept"),
    ],
)
def test_the_cache_forgets_jobs_that_are_gone(second, kept) -> None:
    cache: dict = {}
    jobs = {"a.service": job("a.service"), "b.service": job("b.service")}
    job_specs(jobs, UNITS, cache)
    job_specs({n: jobs[n] for n in second}, UNITS, cache)
    assert set(cache) == kept


def test_plan_for_places_by_the_effective_metadata() -> None:
    # M1 registered as a web machine, then set to db through the API: the db unit goes there
    snapshot = Snapshot(
        1,
        jobs={"db.service": job("db.service", DB)},
        units=UNITS,
        machines={M1: Machine(M1, "", {"role": "web"}), M2: Machine(M2, "", {"role": "web"})},
        dynamic_metadata={M1: {"role": "db"}},
    )
    plan = plan_for(snapshot, {})
    assert [(t.action, t.job, t.machine_id) for t in plan.tasks] == [
        (Action.SCHEDULE, "db.service", M1)
    ]


# ---- the plan as writes


def task(action: Action, name: str, machine: str, reason: Reason, detail: str = "") -> Task:
    return Task(action, name, machine, reason, detail)


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        pytest.param([], [], id="nothing"),
        # a new placement: created where there was none
        pytest.param([task(Action.SCHEDULE, "a.service", M1, Reason.PLACED)],
                     [Step("a.service", None, M1, Reason.PLACED.value)], id="place"),
        # an unplacement, with the rule's detail
        pytest.param([task(Action.UNSCHEDULE, "a.service", M1, Reason.MACHINE_GONE, M1)],
                     [Step("a.service", M1, None, f"{Reason.MACHINE_GONE.value} ({M1})")],
                     id="unplace"),
        # a move is one compare-and-swap old → new, never an unplace and a place apart
        pytest.param([task(Action.UNSCHEDULE, "a.service", M1, Reason.REQUIREMENTS_BROKEN,
                           "conflicts with b.service"),
                      task(Action.SCHEDULE, "a.service", M2, Reason.MOVED,
                           "conflicts with b.service")],
                     [Step("a.service", M1, M2,
                           f"{Reason.REQUIREMENTS_BROKEN.value} (conflicts with b.service); "
                           f"{Reason.MOVED.value} (conflicts with b.service)")],
                     id="move-merged"),
        # several jobs: one write each, in the plan's order
        pytest.param([task(Action.UNSCHEDULE, "a.service", M1, Reason.JOB_DESTROYED),
                      task(Action.SCHEDULE, "b.service", M2, Reason.PLACED)],
                     [Step("a.service", M1, None, Reason.JOB_DESTROYED.value),
                      Step("b.service", None, M2, Reason.PLACED.value)], id="two-jobs"),
    ],
)  # fmt: skip
def test_steps(tasks, expected) -> None:
    assert steps(EnginePlan(tuple(tasks))) == expected


@pytest.mark.parametrize(
    ("step", "action"),
    [
        pytest.param(Step("a.service", None, M1, ""), Action.SCHEDULE, id="place"),
        pytest.param(Step("a.service", M1, M2, ""), Action.SCHEDULE, id="move"),
        pytest.param(Step("a.service", M1, None, ""), Action.UNSCHEDULE, id="unplace"),
    ],
)
def test_a_step_is_logged_as_its_action(step, action) -> None:
    assert step.action is action


@settings(max_examples=200, deadline=None)
@given(clusters())
def test_steps_write_exactly_the_plan(cluster) -> None:
    jobs, machines, placements, strategy = cluster
    plan = plan_engine(jobs, machines, placements, strategy=strategy)
    writes = steps(plan)
    assert len({s.job for s in writes}) == len(writes)  # one write per job
    after = dict(placements)
    for s in writes:
        assert after.get(s.job) == s.old  # each guarded on what the plan saw
        if s.new is None:
            del after[s.job]
        else:
            after[s.job] = s.new
    assert after == result(plan, placements)


# ---- won writes recorded before their watch events


@pytest.mark.parametrize(
    ("before", "step", "after"),
    [
        pytest.param({}, Step("a.service", None, M1, ""), {"a.service": M1}, id="placed"),
        pytest.param({"a.service": M1}, Step("a.service", M1, M2, ""), {"a.service": M2},
                     id="moved"),
        pytest.param({"a.service": M1}, Step("a.service", M1, None, ""), {}, id="unplaced"),
        # the watch already brought a newer placement: it is kept
        pytest.param({"a.service": M3}, Step("a.service", M1, M2, ""), {"a.service": M3},
                     id="watch-moved-on"),
        pytest.param({"a.service": M3}, Step("a.service", None, M1, ""), {"a.service": M3},
                     id="placed-meanwhile"),
    ],
)  # fmt: skip
def test_record_won(before, step, after) -> None:
    view = ClusterView(Snapshot(1, placements=before))
    record_won(view, step)
    assert view.placements == after


def test_the_echo_of_a_recorded_write_changes_nothing() -> None:
    # so the follower hands the engine no event for it, and it costs no plan
    view = ClusterView(Snapshot(1))
    record_won(view, Step("a.service", None, M1, ""))
    echo = Changed(2, KeyKind.SCHEDULE, "a.service", Placement("a.service", M1))
    assert view.apply(echo) is False


def test_machine_metadata_event_changes_the_next_plan() -> None:
    # the dynamic metadata arrives as an event folded into the view the engine plans on
    view = ClusterView(Snapshot(1, jobs={"db.service": job("db.service", DB)}, units=UNITS,
                                machines={M1: Machine(M1, "", {"role": "web"})}))  # fmt: skip
    assert plan_for(view.freeze(), {}).tasks == ()
    view.apply(Changed(2, KeyKind.MACHINE_META, M1, DynamicMetadata(M1, {"role": "db"})))
    assert [t.machine_id for t in plan_for(view.freeze(), {}).tasks] == [M1]
