"""The engine planner: every [X-Fleet] rule as a table, then safety properties with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.model import JobState
from fleetd.reconcile.engine import Action, Reason, plan_engine
from fleetd.reconcile.scheduler import ClusterState, JobSpec, MachineSpec, Strategy, reject_reason
from fleetd.unit import parse_unit
from tests.seed import seed_unit

APACHE = seed_unit("apache@.service")

M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
MACHINES = [
    MachineSpec(M1, {"machine": "m1", "role": "web"}),
    MachineSpec(M2, {"machine": "m2", "role": "db"}),
    MachineSpec(M3, {"machine": "m3", "role": "misc"}),
]
LAUNCHED, LOADED, INACTIVE = JobState.LAUNCHED, JobState.LOADED, JobState.INACTIVE


def job(name: str, xfleet: str = "", desired: JobState = LAUNCHED) -> JobSpec:
    unit = parse_unit(
        "[Service]\nExecStart=/bin/true\n" + (f"[X-Fleet]\n{xfleet}\n" if xfleet else "")
    )
    return JobSpec(name, desired, unit.requirements(name))


def jobs_of(*specs: JobSpec) -> dict[str, JobSpec]:
    return {j.name: j for j in specs}


def result(plan, placements: dict[str, str]) -> dict[str, str]:
    """Placements after applying the plan's tasks."""
    out = dict(placements)
    for task in plan.tasks:
        if task.action is Action.UNSCHEDULE:
            assert out.pop(task.job) == task.machine_id
        else:
            assert task.job not in out
            out[task.job] = task.machine_id
    return out


def test_seed_apache_three_instances_spread_and_a_fourth_waits() -> None:
    jobs = {
        n: JobSpec(n, LAUNCHED, APACHE.requirements(n))
        for n in ("apache@1.service", "apache@2.service", "apache@3.service", "apache@4.service")
    }
    plan = plan_engine(jobs, MACHINES, {})
    placed = result(plan, {})
    assert sorted(placed) == ["apache@1.service", "apache@2.service", "apache@3.service"]
    assert sorted(placed.values()) == [M1, M2, M3]  # three different machines
    assert "apache@4.service" in plan.unplaced
    assert "conflicts with apache@" in plan.unplaced["apache@4.service"]


@pytest.mark.parametrize(
    ("jobs", "placements", "expected"),
    [
        # only loaded/launched jobs are placed
        pytest.param([job("a.service", desired=INACTIVE)], {}, {}, id="inactive-not-placed"),
        pytest.param([job("a.service", desired=LOADED)], {}, {"a.service": M1}, id="loaded-placed"),
        # least loaded wins, ties by machine ID
        pytest.param(
            [job("a.service"), job("b.service"), job("c.service"), job("d.service")],
            {},
            {"a.service": M1, "b.service": M2, "c.service": M3, "d.service": M1},
            id="least-loaded-ties-by-id",
        ),
        pytest.param(
            [job("a.service"), job("new.service")],
            {"a.service": M1},
            {"a.service": M1, "new.service": M2},
            id="existing-load-counts",
        ),
        # MachineID: full and 8-character short ID
        pytest.param([job("a.service", f"MachineID={M3}")], {}, {"a.service": M3}, id="machine-id"),
        pytest.param(
            [job("a.service", "MachineID=33333333")], {}, {"a.service": M3}, id="short-id"
        ),
        pytest.param([job("a.service", "MachineID=deadbeef")], {}, {}, id="machine-id-absent"),
        # MachineMetadata: OR within a key, AND across keys
        pytest.param(
            [job("db.service", "MachineMetadata=role=db")], {}, {"db.service": M2}, id="metadata"
        ),
        pytest.param(
            [job("x.service", "MachineMetadata=role=db\nMachineMetadata=role=misc")],
            {},
            {"x.service": M2},
            id="metadata-or",
        ),
        pytest.param(
            [job("x.service", "MachineMetadata=role=db\nMachineMetadata=machine=m3")],
            {},
            {},
            id="metadata-and",
        ),
        # MachineOf: same machine as the target; waits while it is unplaced
        pytest.param(
            [job("hello.service"), job("sidekick.service", "MachineOf=hello.service")],
            {"hello.service": M2},
            {"hello.service": M2, "sidekick.service": M2},
            id="machine-of",
        ),
        pytest.param(
            [
                job("hello.service", desired=INACTIVE),
                job("sidekick.service", "MachineOf=hello.service"),
            ],
            {},
            {},
            id="machine-of-waits",
        ),
        pytest.param(
            [job("a.service", "MachineOf=z.service"), job("z.service")],
            {},
            {"a.service": M1, "z.service": M1},
            id="machine-of-target-placed-first-in-one-pass",
        ),
        # Conflicts, both directions
        pytest.param(
            [job("a.service", "Conflicts=b.service"), job("b.service")],
            {"b.service": M1},
            {"a.service": M2, "b.service": M1},
            id="conflicts",
        ),
        pytest.param(
            [job("a.service"), job("b.service", "Conflicts=a.service")],
            {"b.service": M1},
            {"a.service": M2, "b.service": M1},
            id="conflicts-reverse",
        ),
        # Replaces: the replacing unit may land where the replaced one runs, which then moves
        pytest.param(
            [
                job("old.service"),
                job("new.service", "Replaces=old.service\nMachineMetadata=machine=m1"),
            ],
            {"old.service": M1},
            {"new.service": M1, "old.service": M2},
            id="replaces-moves-the-replaced",
        ),
        # Global units are not placed by the engine
        pytest.param([job("g.service", "Global=true")], {}, {}, id="global-not-placed"),
        pytest.param(
            [job("g.service", "Global=true")], {"g.service": M1}, {}, id="global-unscheduled"
        ),
        # desired inactive → schedule removed
        pytest.param(
            [job("a.service", desired=INACTIVE)], {"a.service": M1}, {}, id="inactive-unscheduled"
        ),
        # destroyed job → schedule removed
        pytest.param([], {"gone.service": M1}, {}, id="destroyed-unscheduled"),
        # machine disappears → re-placed on a survivor
        pytest.param(
            [job("a.service")],
            {"a.service": "9" * 32},
            {"a.service": M1},
            id="machine-gone-replaced",
        ),
        # a constraint no longer holds → re-placed
        pytest.param(
            [job("a.service", "MachineMetadata=role=web")],
            {"a.service": M2},
            {"a.service": M1},
            id="metadata-broken-moves",
        ),
        # placed units are never moved to rebalance
        pytest.param(
            [job("a.service"), job("b.service")],
            {"a.service": M1, "b.service": M1},
            {"a.service": M1, "b.service": M1},
            id="no-rebalancing",
        ),
        # two placed units that conflict: one moves, deterministically the first by name
        pytest.param(
            [job("a.service", "Conflicts=b.service"), job("b.service")],
            {"a.service": M1, "b.service": M1},
            {"a.service": M2, "b.service": M1},
            id="existing-conflict-resolved",
        ),
        # followers move with their target
        pytest.param(
            [job("t.service", "MachineMetadata=role=db"), job("f.service", "MachineOf=t.service")],
            {"t.service": M1, "f.service": M1},
            {"t.service": M2, "f.service": M2},
            id="follower-moves-with-target",
        ),
        # a global unit running on a machine counts towards its load
        pytest.param(
            [job("g.service", "Global=true\nMachineMetadata=role=web"), job("a.service")],
            {},
            {"a.service": M2},
            id="global-counts-as-load",
        ),
        # a global unit's Conflicts keep others off the machines it runs on
        pytest.param(
            [job("g.service", "Global=true\nConflicts=a.service"), job("a.service")],
            {},
            {},
            id="global-conflicts",
        ),
    ],
)
def test_rules(jobs: list[JobSpec], placements: dict[str, str], expected: dict[str, str]) -> None:
    js = jobs_of(*jobs)
    plan = plan_engine(js, MACHINES, placements)
    assert result(plan, placements) == expected
    # re-planning the result gives no tasks
    assert plan_engine(js, MACHINES, expected).tasks == ()


@pytest.mark.parametrize(
    ("jobs", "fragment"),
    [
        (
            [job("db.service", "MachineMetadata=role=nosql")],
            "no machine matches MachineMetadata role=nosql",
        ),
        (
            [job("a.service", "MachineID=deadbeef")],
            "MachineID=deadbeef names no machine in the cluster",
        ),
        ([job("s.service", "MachineOf=t.service")], "waiting for MachineOf=t.service to be placed"),
    ],
)
def test_unplaced_jobs_say_why(jobs: list[JobSpec], fragment: str) -> None:
    plan = plan_engine(jobs_of(*jobs), MACHINES, {})
    assert plan.tasks == ()
    assert fragment in plan.unplaced[jobs[0].name]


def test_no_machines() -> None:
    plan = plan_engine(jobs_of(job("a.service")), [], {})
    assert plan.unplaced == {"a.service": "no machines in the cluster"}


def test_tasks_carry_reasons() -> None:
    js = jobs_of(job("a.service"), job("b.service", desired=INACTIVE))
    plan = plan_engine(js, MACHINES, {"a.service": "9" * 32, "b.service": M1})
    by_job = {(t.job, t.action): t for t in plan.tasks}
    assert by_job["a.service", Action.UNSCHEDULE].reason is Reason.MACHINE_GONE
    assert by_job["a.service", Action.SCHEDULE].reason is Reason.MOVED
    assert by_job["b.service", Action.UNSCHEDULE].reason is Reason.DESIRED_INACTIVE


# ---------------------------------------------------------------------------------------------
# properties

NAMES = [f"u{i}.service" for i in range(8)]
MIDS = [f"{c}" * 32 for c in "abcd"]


@st.composite
def clusters(draw: st.DrawFn):
    machines = [
        MachineSpec(
            mid,
            {
                "role": draw(st.sampled_from(["web", "db", "web|db"])),
                "cores": draw(st.sampled_from(["2", "8", "16", "many"])),
                **draw(
                    st.sampled_from(
                        [
                            {},
                            {"fleet.memory": "1073741824", "fleet.cpus": "1"},
                            {"fleet.memory": "4294967296", "fleet.cpus": "2"},
                            {
                                "fleet.memory": "2147483648",
                                "fleet.cpus": "4",
                                "fleet.memory-reserved": "1073741824",
                            },
                            {"fleet.memory": "1073741824", "fleet.overcommit": "true"},
                        ]
                    )
                ),
            },
        )
        for mid in draw(st.lists(st.sampled_from(MIDS), unique=True, max_size=4))
    ]
    jobs = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=8)):
        lines = []
        if draw(st.booleans()):
            lines.append(f"Conflicts={draw(st.sampled_from([*NAMES, 'u*.service']))}")
        elif draw(st.integers(0, 4)) == 0:
            lines.append(f"MachineOf={draw(st.sampled_from(NAMES))}")
        if draw(st.integers(0, 3)) == 0:
            lines.append(f"MachineMetadata=role={draw(st.sampled_from(['web', 'db']))}")
        if draw(st.integers(0, 3)) == 0:
            clause = draw(st.sampled_from(["cores>=8", "cores<16", "role!=db", "role=~w.*"]))
            lines.append(f"MachineMetadata={clause}")
        if draw(st.integers(0, 3)) == 0:
            lines.append(f"MaxPerMachine={draw(st.integers(1, 2))} u*.service")
        if draw(st.integers(0, 4)) == 0:
            lines.append("Spread=role u*.service")
        if draw(st.integers(0, 2)) == 0:
            lines.append(f"MemoryReservation={draw(st.sampled_from(['256M', '512M', '1G']))}")
        if draw(st.integers(0, 3)) == 0:
            lines.append(f"CPUReservation={draw(st.sampled_from(['0.5', '1']))}")
        if draw(st.integers(0, 6)) == 0 and not any(x.startswith("MachineOf") for x in lines):
            lines.append(f"MachineID={draw(st.sampled_from(MIDS))[:8]}")
            lines = [x for x in lines if not x.startswith(("Conflicts", "Spread"))]
        if draw(st.integers(0, 8)) == 0 and not lines:
            lines.append("Global=true")
        desired = draw(st.sampled_from([INACTIVE, LOADED, LAUNCHED, LAUNCHED]))
        jobs[name] = job(name, "\n".join(lines), desired)
    placements = {
        name: draw(st.sampled_from([*MIDS, "e" * 32]))
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=8))
    }
    return jobs, machines, placements, draw(st.sampled_from(list(Strategy)))


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_properties(cluster) -> None:
    jobs, machines, placements, strategy = cluster
    plan = plan_engine(jobs, machines, placements, strategy=strategy)
    final = result(plan, placements)
    state = ClusterState(machines, jobs, final)
    live = {m.id for m in machines}
    for name, mid in final.items():
        # a departed machine keeps nothing; only wanted, non-global jobs are placed
        assert mid in live
        assert jobs[name].wants_placement
        # no hard constraint is violated
        assert reject_reason(jobs[name], mid, state) is None, (name, mid)
    # every job that has a feasible machine is placed
    for name, spec in jobs.items():
        if spec.wants_placement and name not in final:
            assert all(reject_reason(spec, m.id, state) is not None for m in machines), name
            assert name in plan.unplaced
    # no machine gives more than it offers (a reservation's check, stated on its own)
    for m in machines:
        capacity = state.capacity(m.id)
        memory, cpus = state.reserved_on(m.id)
        if not capacity.overcommit:
            assert (capacity.memory is None and memory == 0) or memory <= (capacity.memory or 0)
            assert (capacity.cpus is None and cpus == 0) or cpus <= (capacity.cpus or 0) + 1e-9
    # deterministic, and re-planning the result gives no tasks
    assert plan_engine(jobs, machines, placements, strategy=strategy) == plan
    assert plan_engine(jobs, machines, final, strategy=strategy).tasks == ()


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_without_reservations_every_strategy_places_as_fleet(cluster) -> None:
    jobs, machines, placements, strategy = cluster
    plain = {n: j for n, j in jobs.items() if j.requirements.reserves == (0, 0)}
    assert plan_engine(plain, machines, placements, strategy=strategy) == plan_engine(
        plain, machines, placements, strategy=Strategy.LEASTLOADED
    )
