"""Which registry events concern an agent: its index of the jobs on its machine (placed there,
Global, or unsure while their content is unknown), and what the machine should hold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.model import (
    DynamicMetadata,
    Job,
    JobState,
    LeaderInfo,
    Machine,
    Placement,
    RestartRequest,
    UnitContent,
    UnitState,
)
from fleetd.reconcile.relevance import LocalJobs
from fleetd.registry import Changed, ClusterView, KeyKind, Removed, Resync, Snapshot
from fleetd.unit import parse_unit
from tests.seed import seed_unit

HELLO = seed_unit("hello.service")
GLOBAL = parse_unit("[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n")
WEB_GLOBAL = parse_unit(
    "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\n"
)
ME, OTHER = "1" * 32, "2" * 32


def job(name: str, unit=HELLO, desired: JobState = JobState.LAUNCHED) -> Job:
    return Job(name, unit.hash, desired)


def cluster(jobs=(), units=(HELLO, GLOBAL), placements=None, **fields) -> ClusterView:
    return ClusterView(
        Snapshot(
            1,
            jobs={j.name: j for j in jobs},
            units={u.hash: UnitContent(u) for u in units},
            placements=placements or {},
            **fields,
        )
    )


def started(view: ClusterView) -> LocalJobs:
    """The index of an agent that just took its first snapshot."""
    local = LocalJobs(ME)
    assert local.note(view, None)
    local.jobs(view)  # the first plan sorts the unsure jobs out
    return local


def fold(view: ClusterView, local: LocalJobs, event) -> bool:
    """As the follower does: fold the event into the view, then hand it to the index."""
    view.apply(event)
    return local.note(view, event)


def put(kind: KeyKind, ident, doc) -> Changed:
    return Changed(2, kind, ident, doc)


def gone(kind: KeyKind, ident) -> Removed:
    return Removed(2, kind, ident)


# ---- the first snapshot and a resync: everything is looked at again


def test_first_snapshot_indexes_the_jobs_placed_here_and_holds_every_job_unsure() -> None:
    view = cluster(
        [job("hello.service"), job("elsewhere.service"), job("g.service", GLOBAL)],
        placements={"hello.service": ME, "elsewhere.service": OTHER},
    )
    local = LocalJobs(ME)
    assert local.note(view, None)  # the first plan always runs
    assert local.placed == {"hello.service"}
    assert local.unsure == {"hello.service", "elsewhere.service", "g.service"}
    local.jobs(view)
    assert (local.globals, local.unsure) == ({"g.service"}, set())


def test_a_resync_rebuilds_the_index_from_the_new_view() -> None:
    view = cluster([job("hello.service")], placements={"hello.service": ME})
    local = started(view)
    after = Snapshot(9, jobs={"g.service": job("g.service", GLOBAL)},
                     units={GLOBAL.hash: UnitContent(GLOBAL)})  # fmt: skip
    assert fold(view, local, Resync(9, after))
    assert local.placed == set()
    assert local.jobs(view).keys() == {"g.service"}


# ---- placements: only those to or from this machine matter


@pytest.mark.parametrize(
    ("before", "event", "relevant", "placed"),
    [
        # the engine placed a unit here
        pytest.param({}, put(KeyKind.SCHEDULE, "hello.service", Placement("hello.service", ME)),
                     True, {"hello.service"}, id="placed-here"),
        # a placement on another machine: no plan (a bulk submit elsewhere costs nothing)
        pytest.param({}, put(KeyKind.SCHEDULE, "hello.service", Placement("hello.service", OTHER)),
                     False, set(), id="placed-elsewhere"),
        # a unit of ours moved to another machine: this one must stop it
        pytest.param({"hello.service": ME},
                     put(KeyKind.SCHEDULE, "hello.service", Placement("hello.service", OTHER)),
                     True, set(), id="moved-away"),
        # moved between two other machines
        pytest.param({"hello.service": "3" * 32},
                     put(KeyKind.SCHEDULE, "hello.service", Placement("hello.service", OTHER)),
                     False, set(), id="moved-between-others"),
        # unplaced from here: stop and unlink it
        pytest.param({"hello.service": ME}, gone(KeyKind.SCHEDULE, "hello.service"),
                     True, set(), id="unplaced-here"),
        # unplaced from another machine
        pytest.param({"hello.service": OTHER}, gone(KeyKind.SCHEDULE, "hello.service"),
                     False, set(), id="unplaced-elsewhere"),
    ],
)  # fmt: skip
def test_placement_events(before, event, relevant, placed) -> None:
    view = cluster([job("hello.service")], placements=before)
    local = started(view)
    assert fold(view, local, event) is relevant
    assert local.placed == placed


# ---- jobs: placed here, Global, or whose content is not known yet


@pytest.mark.parametrize(
    ("placements", "new", "relevant", "globals_", "unsure"),
    [
        # desired state of a unit placed here changed
        pytest.param({"hello.service": ME}, job("hello.service", desired=JobState.LOADED),
                     True, set(), set(), id="placed-here-changed"),
        # a job of another machine changed: nothing to do here
        pytest.param({"hello.service": OTHER}, job("hello.service", desired=JobState.LOADED),
                     False, set(), set(), id="placed-elsewhere-changed"),
        # a new job not placed yet, of known content and not Global: the engine places it
        pytest.param({}, job("new.service"), False, set(), set(), id="new-unplaced"),
        # a new Global job: it may run here
        pytest.param({}, job("g.service", GLOBAL), True, {"g.service"}, set(), id="new-global"),
        # its content has not arrived yet: it may be Global, so it is looked at again later
        pytest.param({}, Job("late.service", "f" * 40, JobState.LAUNCHED), True, set(),
                     {"late.service"}, id="content-unknown"),
    ],
)  # fmt: skip
def test_job_changed(placements, new, relevant, globals_, unsure) -> None:
    view = cluster([job("hello.service")], placements=placements)
    local = started(view)
    assert fold(view, local, put(KeyKind.JOB, new.name, new)) is relevant
    assert (local.globals, local.unsure) == (globals_, unsure)


def test_a_global_job_replaced_by_a_plain_one_is_looked_at_once_more() -> None:
    view = cluster([job("g.service", GLOBAL)])
    local = started(view)
    assert local.globals == {"g.service"}
    # it was Global: this machine runs it and must now drop it
    assert fold(view, local, put(KeyKind.JOB, "g.service", job("g.service", HELLO)))
    assert local.globals == set()
    # a second change of the (now plain, unplaced) job concerns this machine no more
    again = job("g.service", HELLO, JobState.LOADED)
    assert not fold(view, local, put(KeyKind.JOB, "g.service", again))


@pytest.mark.parametrize(
    ("name", "relevant"),
    [
        pytest.param("hello.service", True, id="placed-here"),  # stop and unlink it
        pytest.param("g.service", True, id="global"),  # every machine drops it
        pytest.param("late.service", True, id="unsure"),  # it might have run here
        pytest.param("elsewhere.service", False, id="placed-elsewhere"),
    ],
)
def test_job_removed(name, relevant) -> None:
    view = cluster(
        [job("hello.service"), job("g.service", GLOBAL), job("elsewhere.service")],
        placements={"hello.service": ME, "elsewhere.service": OTHER},
    )
    local = started(view)
    assert fold(view, local, put(KeyKind.JOB, "late.service", Job("late.service", "f" * 40)))
    assert fold(view, local, gone(KeyKind.JOB, name)) is relevant
    assert name not in local.globals | local.unsure


# ---- unit contents


@pytest.mark.parametrize(
    ("waiting", "relevant"),
    [
        pytest.param(True, True, id="a-job-waits-for-content"),  # it may be Global: plan
        pytest.param(False, False, id="nobody-waits"),  # a content for jobs elsewhere
    ],
)
def test_content_arrives(waiting, relevant) -> None:
    view = cluster([job("hello.service")])
    local = started(view)
    if waiting:
        fold(view, local, put(KeyKind.JOB, "late.service", job("late.service", WEB_GLOBAL)))
    assert (
        fold(view, local, put(KeyKind.UNIT, WEB_GLOBAL.hash, UnitContent(WEB_GLOBAL))) is relevant
    )


def test_an_unsure_job_is_sorted_out_when_its_content_arrives() -> None:
    view = cluster()
    local = started(view)
    fold(view, local, put(KeyKind.JOB, "late.service", job("late.service", WEB_GLOBAL)))
    assert local.jobs(view) == {}  # still unknown: nothing to run
    fold(view, local, put(KeyKind.UNIT, WEB_GLOBAL.hash, UnitContent(WEB_GLOBAL)))
    assert local.jobs(view).keys() == {"late.service"}
    assert (local.globals, local.unsure) == ({"late.service"}, set())


def test_a_content_removed_changes_nothing_here() -> None:
    view = cluster([job("hello.service")], placements={"hello.service": ME})
    local = started(view)
    assert not fold(view, local, gone(KeyKind.UNIT, HELLO.hash))
    # the requirements read before are kept: the unit placed here still runs
    assert local.jobs(view).keys() == {"hello.service"}


# ---- machines, restarts, states, the leader


@pytest.mark.parametrize(
    ("event", "relevant"),
    [
        # this machine's registration or metadata: which Global units it runs
        pytest.param(put(KeyKind.MACHINE, ME, Machine(ME)), True, id="me-registered"),
        pytest.param(gone(KeyKind.MACHINE, ME), True, id="me-gone"),
        pytest.param(put(KeyKind.MACHINE_META, ME, DynamicMetadata(ME, {"role": "web"})), True,
                     id="my-metadata"),
        pytest.param(gone(KeyKind.MACHINE_META, ME), True, id="my-metadata-removed"),
        # other machines coming and going do not change what this one holds
        pytest.param(put(KeyKind.MACHINE, OTHER, Machine(OTHER)), False, id="other-registered"),
        pytest.param(gone(KeyKind.MACHINE, OTHER), False, id="other-gone"),
        pytest.param(put(KeyKind.MACHINE_META, OTHER, DynamicMetadata(OTHER, {"a": "b"})), False,
                     id="other-metadata"),
        # restart requests: only those for this machine
        pytest.param(put(KeyKind.RESTART, ("hello.service", ME),
                         RestartRequest("hello.service", ME, "t1")), True, id="restart-here"),
        pytest.param(gone(KeyKind.RESTART, ("hello.service", ME)), True, id="restart-here-gone"),
        pytest.param(put(KeyKind.RESTART, ("hello.service", OTHER),
                         RestartRequest("hello.service", OTHER, "t1")), False,
                     id="restart-elsewhere"),
        # states are what agents publish, never a reason to plan; nor is the engine's leader
        pytest.param(put(KeyKind.STATE, ("hello.service", ME),
                         UnitState("hello.service", ME, HELLO.hash, "loaded", "active", "running")),
                     False, id="my-state"),
        pytest.param(gone(KeyKind.STATE, ("hello.service", OTHER)), False, id="other-state-gone"),
        pytest.param(put(KeyKind.LEADER, "leader", LeaderInfo(OTHER)), False, id="leader"),
    ],
)  # fmt: skip
def test_other_events(event, relevant) -> None:
    view = cluster([job("hello.service")], placements={"hello.service": ME},
                   machines={ME: Machine(ME), OTHER: Machine(OTHER)},
                   states={("hello.service", OTHER): UnitState(
                       "hello.service", OTHER, HELLO.hash, "loaded", "active", "running")},
                   restarts={("hello.service", ME): RestartRequest("hello.service", ME, "t0")},
                   dynamic_metadata={ME: {"x": "y"}})  # fmt: skip
    local = started(view)
    assert fold(view, local, event) is relevant


# ---- names that can be no file


def test_a_name_that_is_no_file_name_is_refused_and_reported_once() -> None:
    bad = Job("../evil.service", HELLO.hash, JobState.LAUNCHED)
    view = cluster([bad], placements={bad.name: ME})
    local = LocalJobs(ME)
    local.note(view, None)
    assert local.jobs(view) == {}
    assert [name for name, _ in local.take_refusals()] == [bad.name]
    assert "../evil.service" in local.refused
    assert local.jobs(view) == {}
    assert local.take_refusals() == []  # once


# ---- what this machine should hold


def test_desired_holds_the_placed_and_the_matching_global_units_with_their_restarts() -> None:
    view = cluster(
        [job("hello.service"), job("g.service", GLOBAL), job("web.service", WEB_GLOBAL),
         job("elsewhere.service")],
        units=(HELLO, GLOBAL, WEB_GLOBAL),
        placements={"hello.service": ME, "elsewhere.service": OTHER},
        restarts={("hello.service", ME): RestartRequest("hello.service", ME, "t1"),
                  ("g.service", OTHER): RestartRequest("g.service", OTHER, "t2")},
    )  # fmt: skip
    desired = started(view).desired(view, {"role": "db"})
    assert sorted(desired) == ["g.service", "hello.service"]
    assert desired["hello.service"].restart == "t1"
    assert desired["g.service"].restart == ""  # requested for another machine


@pytest.mark.parametrize(
    ("registered", "dynamic", "configured", "runs"),
    [
        # the configured metadata until the machine is registered
        pytest.param(None, None, {"role": "web"}, True, id="configured"),
        # the registered metadata wins over the configuration read at start
        pytest.param({"role": "db"}, None, {"role": "web"}, False, id="registered"),
        # metadata set through the API overrides what the machine registered
        pytest.param({"role": "db"}, {"role": "web"}, {}, True, id="dynamic-overrides"),
        # a dynamic "" deletes the key
        pytest.param({"role": "web"}, {"role": ""}, {}, False, id="dynamic-deletes"),
    ],
)
def test_desired_matches_globals_against_the_effective_metadata(
    registered, dynamic, configured, runs
) -> None:
    view = cluster(
        [job("web.service", WEB_GLOBAL)],
        units=(WEB_GLOBAL,),
        machines={ME: Machine(ME, "", registered)} if registered is not None else {},
        dynamic_metadata={ME: dynamic} if dynamic is not None else {},
    )
    assert ("web.service" in started(view).desired(view, configured)) is runs


# ---- a property: the index built event by event is the index of the final view

NAMES = ["a.service", "b.service", "c.service"]
CONTENTS = [HELLO, GLOBAL]
MACHINES = [ME, OTHER]


def events_st():
    schedule = st.builds(
        lambda n, m: put(KeyKind.SCHEDULE, n, Placement(n, m)),
        st.sampled_from(NAMES),
        st.sampled_from(MACHINES),
    )
    unschedule = st.builds(lambda n: gone(KeyKind.SCHEDULE, n), st.sampled_from(NAMES))
    new_job = st.builds(
        lambda n, u: put(KeyKind.JOB, n, job(n, u)),
        st.sampled_from(NAMES),
        st.sampled_from(CONTENTS),
    )
    destroy = st.builds(lambda n: gone(KeyKind.JOB, n), st.sampled_from(NAMES))
    content = st.builds(
        lambda u: put(KeyKind.UNIT, u.hash, UnitContent(u)), st.sampled_from(CONTENTS)
    )
    return st.lists(st.one_of(schedule, unschedule, new_job, destroy, content), max_size=25)


@settings(max_examples=300, deadline=None)
@given(events_st())
def test_the_index_follows_every_event(events) -> None:
    view = ClusterView(Snapshot(1))
    local = LocalJobs(ME)
    local.note(view, None)
    for event in events:
        fold(view, local, event)
    rebuilt = LocalJobs(ME)
    rebuilt.note(view, None)
    assert local.placed == rebuilt.placed == {n for n, m in view.placements.items() if m == ME}
    assert local.jobs(view) == rebuilt.jobs(view)
    assert local.desired(view, {}) == rebuilt.desired(view, {})
