"""The agent planner: desired vs actual → ordered systemd tasks, and which units a machine holds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.model import JobState
from fleetd.reconcile.agent import (
    ActualUnit,
    AgentJob,
    DesiredUnit,
    Kind,
    Why,
    actual_units,
    desired_units,
    plan_agent,
)
from fleetd.systemd import UnitState as SystemdState
from fleetd.unit import parse_unit
from tests.seed import seed_unit

HELLO = seed_unit("hello.service")
APACHE = seed_unit("apache@.service")
H1, H2 = "a" * 40, "b" * 40
ME, OTHER = "1" * 32, "2" * 32


def kinds(tasks) -> list[tuple[Kind, str]]:
    return [(t.kind, t.unit) for t in tasks]


@pytest.mark.parametrize(
    ("desired", "actual", "expected"),
    [
        pytest.param({}, {}, [], id="nothing"),
        # newly placed and launched: write (the file and its link), start
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H1, True)},
            {},
            [
                (Kind.WRITE, "hello.service"),
                (Kind.START, "hello.service"),
            ],
            id="new-launched",
        ),
        # newly placed, only loaded: no start
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H1, False)},
            {},
            [(Kind.WRITE, "hello.service")],
            id="new-loaded",
        ),
        # already right: nothing
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H1, True)},
            {"hello.service": ActualUnit("hello.service", H1, "active", True)},
            [],
            id="running-as-wanted",
        ),
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H1, False)},
            {"hello.service": ActualUnit("hello.service", H1, "inactive")},
            [],
            id="loaded-as-wanted",
        ),
        # loaded → launched: start only
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H1, True)},
            {"hello.service": ActualUnit("hello.service", H1, "inactive")},
            [(Kind.START, "hello.service")],
            id="start",
        ),
        # launched → loaded: stop only
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H1, False)},
            {"hello.service": ActualUnit("hello.service", H1, "active", True)},
            [(Kind.STOP, "hello.service")],
            id="stop",
        ),
        # a failed unit the agent started is not started again (no restart loop)
        pytest.param(
            {"bad.service": DesiredUnit("bad.service", H1, True)},
            {"bad.service": ActualUnit("bad.service", H1, "failed", True)},
            [],
            id="failed-not-restarted",
        ),
        # a failed unit whose desired state became loaded is stopped (the shell resets it), so
        # the next start runs it afresh and its old failure is not taken for a new one
        pytest.param(
            {"bad.service": DesiredUnit("bad.service", H1, False)},
            {"bad.service": ActualUnit("bad.service", H1, "failed", True)},
            [(Kind.STOP, "bad.service")],
            id="failed-stopped-when-loaded",
        ),
        # a oneshot that ran and exited: stopping it lets the next start run it again
        pytest.param(
            {"job.service": DesiredUnit("job.service", H1, False)},
            {"job.service": ActualUnit("job.service", H1, "inactive", True)},
            [(Kind.STOP, "job.service")],
            id="exited-stopped-when-loaded",
        ),
        # no longer placed here: stop if running, then unlink
        pytest.param(
            {},
            {"hello.service": ActualUnit("hello.service", H1, "active", True)},
            [(Kind.STOP, "hello.service"), (Kind.UNLINK, "hello.service")],
            id="removed-running",
        ),
        pytest.param(
            {},
            {"hello.service": ActualUnit("hello.service", H1, "inactive")},
            [(Kind.UNLINK, "hello.service")],
            id="removed-loaded",
        ),
        # content changed while launched: replace the file and restart
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H2, True)},
            {"hello.service": ActualUnit("hello.service", H1, "active", True)},
            [
                (Kind.STOP, "hello.service"),
                (Kind.WRITE, "hello.service"),
                (Kind.START, "hello.service"),
            ],
            id="changed-launched-restarts",
        ),
        # content changed while only loaded: replace the file, no start
        pytest.param(
            {"hello.service": DesiredUnit("hello.service", H2, False)},
            {"hello.service": ActualUnit("hello.service", H1, "inactive")},
            [(Kind.WRITE, "hello.service")],
            id="changed-loaded-no-restart",
        ),
        # many units, in a fixed order: stops, unlinks, writes, starts
        pytest.param(
            {f"u{i}.service": DesiredUnit(f"u{i}.service", H1, True) for i in range(2)}
            | {"keep.service": DesiredUnit("keep.service", H1, True)},
            {
                "old.service": ActualUnit("old.service", H1, "active", True),
                "keep.service": ActualUnit("keep.service", H1, "active", True),
            },
            [
                (Kind.STOP, "old.service"),
                (Kind.UNLINK, "old.service"),
                (Kind.WRITE, "u0.service"),
                (Kind.WRITE, "u1.service"),
                (Kind.START, "u0.service"),
                (Kind.START, "u1.service"),
            ],
            id="batch-fixed-order",
        ),
    ],
)
def test_plan_table(desired, actual, expected) -> None:
    assert kinds(plan_agent(desired, actual)) == expected


def test_every_task_kind_is_one_action_of_the_shell() -> None:
    # no task that nothing runs: a WRITE is the file and its link, and the systemd adapter
    # reloads once for all the links and unlinks of a plan
    assert [k.name for k in Kind] == ["STOP", "UNLINK", "WRITE", "START", "RESTART"]


def test_tasks_carry_reasons_and_hash() -> None:
    tasks = plan_agent(
        {"a.service": DesiredUnit("a.service", H2, True)},
        {"a.service": ActualUnit("a.service", H1, "active", True)},
    )
    write = next(t for t in tasks if t.kind is Kind.WRITE)
    assert write.hash == H2
    assert write.reason is Why.CONTENT_CHANGED


T1, T2 = "token-1", "token-2"


@pytest.mark.parametrize(
    ("desired", "actual", "expected"),
    [
        # a restart was requested for a running unit: restart it once, with its token
        pytest.param(
            DesiredUnit("hello.service", H1, True, T1),
            ActualUnit("hello.service", H1, "active", True),
            [(Kind.RESTART, T1)],
            id="requested",
        ),
        # that request is done: nothing (level-based: no second restart)
        pytest.param(
            DesiredUnit("hello.service", H1, True, T1),
            ActualUnit("hello.service", H1, "active", True, T1),
            [],
            id="done",
        ),
        # a newer request after an older one was done
        pytest.param(
            DesiredUnit("hello.service", H1, True, T2),
            ActualUnit("hello.service", H1, "active", True, T1),
            [(Kind.RESTART, T2)],
            id="newer-request",
        ),
        # a failed unit the agent started is restarted too (systemctl restart starts it)
        pytest.param(
            DesiredUnit("hello.service", H1, True, T1),
            ActualUnit("hello.service", H1, "failed", True),
            [(Kind.RESTART, T1)],
            id="failed-unit",
        ),
        # not started yet: the start does the request
        pytest.param(
            DesiredUnit("hello.service", H1, True, T1),
            ActualUnit("hello.service", H1, "inactive", False),
            [(Kind.START, T1)],
            id="start-does-it",
        ),
        # newly placed with a pending request (e.g. unloaded and loaded again): one start
        pytest.param(
            DesiredUnit("hello.service", H1, True, T1),
            None,
            [(Kind.WRITE, ""), (Kind.START, T1)],
            id="new-unit-start-does-it",
        ),
        # the content changed: stop, write, start (which does the request), no restart
        pytest.param(
            DesiredUnit("hello.service", H2, True, T1),
            ActualUnit("hello.service", H1, "active", True),
            [(Kind.STOP, ""), (Kind.WRITE, ""), (Kind.START, T1)],
            id="content-changed",
        ),
        # desired loaded (stopped): a pending request waits until the unit is started
        pytest.param(
            DesiredUnit("hello.service", H1, False, T1),
            ActualUnit("hello.service", H1, "inactive", False),
            [],
            id="not-launched",
        ),
        # no request at all
        pytest.param(
            DesiredUnit("hello.service", H1, True),
            ActualUnit("hello.service", H1, "active", True),
            [],
            id="none",
        ),
    ],
)
def test_restart_requests(desired, actual, expected) -> None:
    actual_map = {} if actual is None else {actual.name: actual}
    tasks = plan_agent({desired.name: desired}, actual_map)
    assert [(t.kind, t.token) for t in tasks] == expected
    restart = [t for t in tasks if t.kind is Kind.RESTART]
    assert all(t.reason is Why.RESTART_REQUESTED and t.unit == desired.name for t in restart)


def test_desired_units_carry_the_requested_token() -> None:
    jobs = {"g.service": job("g.service", glob_unit("")), "hello.service": job("hello.service")}
    got = desired_units(ME, {}, jobs, {"hello.service": ME}, {"g.service": T1, "x.service": T2})
    assert got["g.service"].restart == T1
    assert got["hello.service"].restart == ""


@pytest.mark.parametrize(
    ("said", "started", "restarted", "expected"),
    [
        # systemd's word on a unit the agent started, with the last restart done here
        pytest.param({"hello.service": SystemdState("hello.service", "loaded", "failed", "failed")},
                     {"hello.service"}, {"hello.service": T1},
                     ActualUnit("hello.service", H1, "failed", True, T1), id="said-started-restarted"),
        # a file systemd has said nothing of yet (just written, or the bus was lost): inactive
        pytest.param({}, set(), {}, ActualUnit("hello.service", H1, "inactive", False, ""),
                     id="no-word-yet"),
    ],
)  # fmt: skip
def test_actual_units(said, started, restarted, expected) -> None:
    # one unit per file in the units dir; what systemd says of units without a file is not ours
    said = {**said, "other.service": SystemdState("other.service", "loaded", "active", "running")}
    assert actual_units({"hello.service": H1}, said, started, restarted) == {
        "hello.service": expected
    }


def job(name: str, unit=HELLO, desired=JobState.LAUNCHED) -> AgentJob:
    return AgentJob(name, unit.hash, desired, unit.requirements(name))


def glob_unit(xfleet: str):
    return parse_unit(f"[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n{xfleet}\n")


@pytest.mark.parametrize(
    ("jobs", "placements", "metadata", "expected"),
    [
        # the seed's hello placed here, launched
        pytest.param(
            [job("hello.service")],
            {"hello.service": ME},
            {},
            {"hello.service": True},
            id="placed-here",
        ),
        pytest.param(
            [job("hello.service")], {"hello.service": OTHER}, {}, {}, id="placed-elsewhere"
        ),
        pytest.param(
            [job("hello.service", desired=JobState.LOADED)],
            {"hello.service": ME},
            {},
            {"hello.service": False},
            id="loaded",
        ),
        # an inactive job with a stale placement is not run
        pytest.param(
            [job("hello.service", desired=JobState.INACTIVE)],
            {"hello.service": ME},
            {},
            {},
            id="inactive-stale-placement",
        ),
        # apache@80 placed here
        pytest.param(
            [job("apache@80.service", APACHE)],
            {"apache@80.service": ME},
            {},
            {"apache@80.service": True},
            id="template-instance",
        ),
        # Global: on every machine whose metadata matches
        pytest.param(
            [job("g.service", glob_unit(""))], {}, {"role": "web"}, {"g.service": True}, id="global"
        ),
        pytest.param(
            [job("g.service", glob_unit("MachineMetadata=role=web"))],
            {},
            {"role": "web"},
            {"g.service": True},
            id="global-metadata-match",
        ),
        pytest.param(
            [job("g.service", glob_unit("MachineMetadata=role=db"))],
            {},
            {"role": "web"},
            {},
            id="global-metadata-mismatch",
        ),
        pytest.param(
            [job("g.service", glob_unit(""), JobState.INACTIVE)], {}, {}, {}, id="global-inactive"
        ),
        # Global with Conflicts against a unit placed here: not run here
        pytest.param(
            [job("g.service", glob_unit("Conflicts=hello.service")), job("hello.service")],
            {"hello.service": ME},
            {},
            {"hello.service": True},
            id="global-conflicts-placed",
        ),
        # two conflicting Global units: the first by name wins
        pytest.param(
            [
                job("g1.service", glob_unit("Conflicts=g2.service")),
                job("g2.service", glob_unit("")),
            ],
            {},
            {},
            {"g1.service": True},
            id="global-vs-global",
        ),
    ],
)
def test_desired_units(jobs, placements, metadata, expected) -> None:
    js = {j.name: j for j in jobs}
    got = desired_units(ME, metadata, js, placements)
    assert {n: d.launched for n, d in got.items()} == expected
    for name, d in got.items():
        assert d.hash == js[name].hash


# ---------------------------------------------------------------------------------------------
# properties: applying the plan reaches the desired state, and re-planning gives no tasks

NAMES = [f"u{i}.service" for i in range(6)]
HASHES = [H1, H2]


def apply(tasks, actual: dict[str, ActualUnit], desired) -> dict[str, ActualUnit]:
    out = dict(actual)
    for t in tasks:
        if t.kind is Kind.STOP:
            out[t.unit] = replace(out[t.unit], active="inactive", started=False)
        elif t.kind is Kind.UNLINK:
            del out[t.unit]
        elif t.kind is Kind.WRITE:
            out[t.unit] = ActualUnit(t.unit, t.hash)
        elif t.kind is Kind.START:
            out[t.unit] = replace(out[t.unit], active="active", started=True)
        elif t.kind is Kind.RESTART:
            out[t.unit] = replace(out[t.unit], active="active")
        if t.token:  # a start or restart that succeeded does the request
            out[t.unit] = replace(out[t.unit], restarted=t.token)
    return out


desired_st = st.dictionaries(
    st.sampled_from(NAMES),
    st.tuples(st.sampled_from(HASHES), st.booleans(), st.sampled_from(["", T1, T2])),
).map(lambda d: {n: DesiredUnit(n, h, launched, r) for n, (h, launched, r) in d.items()})
actual_st = st.dictionaries(
    st.sampled_from(NAMES),
    st.tuples(
        st.sampled_from(HASHES),
        st.sampled_from(["active", "inactive", "failed", "activating"]),
        st.booleans(),
        st.sampled_from(["", T1]),
    ),
).map(lambda d: {n: ActualUnit(n, h, a, s or a == "active", r) for n, (h, a, s, r) in d.items()})


@settings(max_examples=500)
@given(desired_st, actual_st)
def test_plan_converges(desired, actual) -> None:
    tasks = plan_agent(desired, actual)
    assert [t.kind for t in tasks] == sorted(t.kind for t in tasks)  # fixed order
    assert all(t.unit for t in tasks)  # every task is about one unit
    after = apply(tasks, actual, desired)
    assert set(after) == set(desired)
    for name, want in desired.items():
        assert after[name].hash == want.hash
        if want.launched and want.restart:  # every request to a launched unit is done
            assert after[name].restarted == want.restart
        assert sum(t.unit == name and t.kind in (Kind.START, Kind.RESTART) for t in tasks) <= 1
        if not want.launched:
            assert after[name].active not in ("active", "activating")
    assert plan_agent(desired, after) == []
    assert plan_agent(desired, actual) == tasks  # deterministic
