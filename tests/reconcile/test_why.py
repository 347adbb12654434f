"""`fleetctl why`: the explanation of a unit, from a registry snapshot, as tables of lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.model import Job, JobState, LeaderInfo, Machine, UnitContent, UnitState
from fleetd.reconcile.engine import plan_for
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.why import Explanation, Kind, explain, read_name, unplaced_reasons
from fleetd.registry import Snapshot
from fleetd.unit import UnitFile, parse_unit
from tests.seed import seed_unit

APACHE = seed_unit("apache@.service")  # X-Conflicts=apache@*.service
# machine IDs whose short forms read apart; sorted: M1 < M3 < M2 < M4 < M5 < M6
M1 = "5ab7f3b47ecc47a0a777884d749db537"
M2 = "929c22af894a4c82b6a758451e974da7"
M3 = "8197e13c2e034e6d9486d5b4c736f323"
M4 = "a1b2c3d4" + "4" * 24
M5 = "b1b2c3d4" + "5" * 24
M6 = "c1b2c3d4" + "6" * 24
LAUNCHED, LOADED, INACTIVE = JobState.LAUNCHED, JobState.LOADED, JobState.INACTIVE


def unit(xfleet: str = "") -> UnitFile:
    return parse_unit(
        "[Service]\nExecStart=/bin/true\n" + (f"[X-Fleet]\n{xfleet}\n" if xfleet else "")
    )


def cluster(
    units: dict[str, UnitFile | tuple[UnitFile, JobState]],
    machines: dict[str, dict[str, str]],
    placements: dict[str, str] | None = None,
    *,
    leader: bool = True,
    states: tuple[tuple[str, str], ...] = (),
) -> Snapshot:
    """A registry: `units` by name (launched unless a state is given), `machines` by ID with
    their metadata (IPs 10.0.0.1...), `placements`, `states` published as active/running."""
    jobs, contents = {}, {}
    for name, entry in units.items():
        u, desired = entry if isinstance(entry, tuple) else (entry, LAUNCHED)
        jobs[name] = Job(name, u.hash, desired)
        contents[u.hash] = UnitContent(u)
    return Snapshot(
        revision=7,
        jobs=jobs,
        units=contents,
        machines={
            mid: Machine(mid, f"10.0.0.{i}", meta)
            for i, (mid, meta) in enumerate(machines.items(), start=1)
        },
        placements=placements or {},
        states={
            (n, m): UnitState(n, m, jobs[n].unit_hash, "loaded", "active", "running")
            for n, m in states
        },
        leaders={"leader": LeaderInfo(M1)} if leader else {},
    )


def lines(snapshot: Snapshot, name: str) -> list[str]:
    found = explain(snapshot, name)
    assert isinstance(found, Explanation), found
    return found.lines()


EU = {"region": "eu"}
US = {"region": "us"}


# ---- names and units that are not there -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        pytest.param("hello.service", None, id="valid"),
        pytest.param("web@9.service", None, id="instance"),
        pytest.param("bad name.service", "invalid character ' ' in unit name", id="space"),
        pytest.param("hello", 'unit name must contain "."', id="no-suffix"),
        pytest.param("hello.nope", 'invalid unit type: "nope"', id="bad-type"),
    ],
)
def test_a_name_is_checked_before_anything_is_read(name: str, refused: str | None) -> None:
    assert read_name(name) == (name if refused is None else Refuse(400, refused))


def test_an_unknown_unit_is_not_found() -> None:
    snapshot = cluster({"hello.service": unit()}, {M1: {}})
    assert explain(snapshot, "nosuch.service") == Refuse(404, "Unit nosuch.service does not exist.")


# ---- the kinds of answer --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot", "name", "expected"),
    [
        # desired inactive: nothing to place, whatever its rules
        pytest.param(
            cluster({"hello.service": (unit(), INACTIVE)}, {M1: {}}),
            "hello.service",
            ["Unit hello.service is not scheduled: its desired state is inactive."],
            id="inactive",
        ),
        pytest.param(
            cluster({"g.service": (unit("Global=true"), INACTIVE)}, {M1: {}}),
            "g.service",
            ["Unit g.service is not scheduled: its desired state is inactive."],
            id="inactive-global",
        ),
        # the case: no machine has a region other than eu
        pytest.param(
            cluster({"web.service": unit("MachineMetadata=region!=eu")}, {M1: EU, M2: EU, M3: {}}),
            "web.service",
            [
                "Unit web.service is not placed on any machine.",
                "Reason: no machine matches MachineMetadata region!=eu",
                "Desired state: launched (current: inactive)",
                "Rules over the 3 machines of the cluster:",
                "  MachineMetadata region!=eu: 3 of 3 machines rejected "
                "(5ab7f3b4: region=eu, 8197e13c: no region, 929c22af: region=eu)",
                "Feasible machines now: 0 of 3",
            ],
            id="unplaced-metadata",
        ),
        # at most three machines are named per rule, the rest counted
        pytest.param(
            cluster(
                {"web.service": (unit("MachineMetadata=region!=eu"), LOADED)},
                {M1: EU, M2: EU, M3: EU, M4: EU, M5: {}},
            ),
            "web.service",
            [
                "Unit web.service is not placed on any machine.",
                "Reason: no machine matches MachineMetadata region!=eu",
                "Desired state: loaded (current: inactive)",
                "Rules over the 5 machines of the cluster:",
                "  MachineMetadata region!=eu: 5 of 5 machines rejected "
                "(5ab7f3b4: region=eu, 8197e13c: region=eu, 929c22af: region=eu, and 2 more)",
                "Feasible machines now: 0 of 5",
            ],
            id="unplaced-and-n-more",
        ),
        # two rules, each refusing some machines, together all: both counted, and the rule
        # that refused none is listed too
        pytest.param(
            cluster(
                {
                    "db.service": unit(
                        "MachineMetadata=disk=ssd\nConflicts=web.service\n"
                        "MaxPerMachine=2 db*.service"
                    ),
                    "web.service": unit(),
                },
                {M1: {"disk": "ssd"}, M2: {"disk": "hdd"}, M3: {}},
                {"web.service": M1},
            ),
            "db.service",
            [
                "Unit db.service is not placed on any machine.",
                "Reason: conflicts with web.service (5ab7f3b4)",
                "Desired state: launched (current: inactive)",
                "Rules over the 3 machines of the cluster:",
                "  MachineMetadata disk=ssd: 2 of 3 machines rejected "
                "(8197e13c: no disk, 929c22af: disk=hdd)",
                "  Conflicts=web.service: 1 of 3 machines rejected (5ab7f3b4: runs web.service)",
                "  MaxPerMachine=2 db*.service: 0 of 3 machines rejected",
                "Feasible machines now: 0 of 3",
            ],
            id="unplaced-rules-together",
        ),
        # the seed's apache@: a fourth instance on three machines; its own Conflicts and
        # those of the instances already there refuse each machine
        pytest.param(
            cluster(
                {f"apache@{i}.service": APACHE for i in (1, 2, 3, 4)},
                {M1: {}, M2: {}, M3: {}},
                {"apache@1.service": M1, "apache@2.service": M2, "apache@3.service": M3},
            ),
            "apache@4.service",
            [
                "Unit apache@4.service is not placed on any machine.",
                "Reason: conflicts with apache@1.service (5ab7f3b4); conflicts with "
                "apache@2.service (929c22af); conflicts with apache@3.service (8197e13c)",
                "Desired state: launched (current: inactive)",
                "Rules over the 3 machines of the cluster:",
                "  Conflicts=apache@*.service: 3 of 3 machines rejected (5ab7f3b4: runs "
                "apache@1.service, 8197e13c: runs apache@3.service, 929c22af: runs "
                "apache@2.service)",
                "  Conflicts of the units already there: 3 of 3 machines rejected (5ab7f3b4: "
                "apache@1.service has Conflicts=apache@*.service, 8197e13c: apache@3.service "
                "has Conflicts=apache@*.service, 929c22af: apache@2.service has "
                "Conflicts=apache@*.service)",
                "Feasible machines now: 0 of 3",
            ],
            id="unplaced-seed-apache",
        ),
        # two units on one machine objecting: the machine counts once, the first named
        pytest.param(
            cluster(
                {
                    "x.service": unit(),
                    "a.service": unit("Conflicts=x.service"),
                    "b.service": unit("Conflicts=x.service"),
                },
                {M1: {}},
                {"a.service": M1, "b.service": M1},
            ),
            "x.service",
            [
                "Unit x.service is not placed on any machine.",
                "Reason: conflicts with a.service (5ab7f3b4)",
                "Desired state: launched (current: inactive)",
                "Rules over the 1 machine of the cluster:",
                "  Conflicts of the units already there: 1 of 1 machine rejected "
                "(5ab7f3b4: a.service has Conflicts=x.service)",
                "Feasible machines now: 0 of 1",
            ],
            id="unplaced-two-neighbours-object",
        ),
        # MachineOf a unit that has no machine: every machine waits for it
        pytest.param(
            cluster({"side.service": unit("MachineOf=main.service")}, {M1: {}, M2: {}}),
            "side.service",
            [
                "Unit side.service is not placed on any machine.",
                "Reason: waiting for MachineOf=main.service to be placed",
                "Desired state: launched (current: inactive)",
                "Rules over the 2 machines of the cluster:",
                "  MachineOf=main.service: 2 of 2 machines rejected "
                "(5ab7f3b4: main.service has no machine yet, 929c22af: main.service has no "
                "machine yet)",
                "Feasible machines now: 0 of 2",
            ],
            id="unplaced-machine-of-waiting",
        ),
        # MachineID naming no machine of the cluster
        pytest.param(
            cluster({"pin.service": unit("MachineID=deadbeef")}, {M1: {}}),
            "pin.service",
            [
                "Unit pin.service is not placed on any machine.",
                "Reason: MachineID=deadbeef names no machine in the cluster",
                "Desired state: launched (current: inactive)",
                "Rules over the 1 machine of the cluster:",
                "  MachineID=deadbeef: 1 of 1 machine rejected (5ab7f3b4: another machine)",
                "Feasible machines now: 0 of 1",
            ],
            id="unplaced-machine-id",
        ),
        # no machine at all
        pytest.param(
            cluster({"hello.service": unit()}, {}),
            "hello.service",
            [
                "Unit hello.service is not placed on any machine.",
                "Reason: no machines in the cluster",
                "Desired state: launched (current: inactive)",
            ],
            id="unplaced-no-machines",
        ),
        # a machine can take it: the engine has not placed it yet, or no engine leads
        pytest.param(
            cluster({"hello.service": unit()}, {M1: {}}),
            "hello.service",
            [
                "Unit hello.service is not placed on any machine.",
                "Reason: not placed yet: a machine can take it, the engine has not placed it",
                "Desired state: launched (current: inactive)",
                "Feasible machines now: 1 of 1",
            ],
            id="unplaced-engine-behind",
        ),
        pytest.param(
            cluster({"hello.service": unit()}, {M1: {}}, leader=False),
            "hello.service",
            [
                "Unit hello.service is not placed on any machine.",
                "Reason: no engine leads the cluster: a machine can take it, nobody places it",
                "Desired state: launched (current: inactive)",
                "Feasible machines now: 1 of 1",
            ],
            id="unplaced-no-engine",
        ),
        # placed on a machine that left: unplaced until the engine moves it
        pytest.param(
            cluster(
                {"web.service": unit("MachineMetadata=region!=eu")}, {M1: EU}, {"web.service": M6}
            ),
            "web.service",
            [
                "Unit web.service is not placed on any machine.",
                "Reason: no machine matches MachineMetadata region!=eu",
                "Desired state: launched (current: inactive)",
                "Rules over the 1 machine of the cluster:",
                "  MachineMetadata region!=eu: 1 of 1 machine rejected (5ab7f3b4: region=eu)",
                "Feasible machines now: 0 of 1",
            ],
            id="unplaced-machine-gone",
        ),
        # placed: its machine, each rule as it holds there, the feasible machines, the ranking
        pytest.param(
            cluster(
                {
                    "web.service": unit("MachineMetadata=region!=eu"),
                    "a.service": unit(),
                    "b.service": unit(),
                },
                {M1: EU, M2: US, M3: {"region": "ap"}},
                {"web.service": M2, "a.service": M2, "b.service": M3},
                states=(("web.service", M2),),
            ),
            "web.service",
            [
                "Unit web.service is placed on 929c22af.../10.0.0.2.",
                "Desired state: launched (current: launched)",
                "Rules on 929c22af:",
                "  MachineMetadata region!=eu: holds (region=us)",
                "Feasible machines now: 2 of 3",
                "Ranking: least loaded first, ties by machine ID: 1 other unit there "
                "(the feasible machines have 1 to 1)",
            ],
            id="placed-metadata",
        ),
        # a unit with no rules: any machine
        pytest.param(
            cluster({"hello.service": unit()}, {M1: {}, M2: {}}, {"hello.service": M1}),
            "hello.service",
            [
                "Unit hello.service is placed on 5ab7f3b4.../10.0.0.1.",
                "Desired state: launched (current: inactive)",
                "Rules on 5ab7f3b4: none (any machine may take it)",
                "Feasible machines now: 2 of 2",
                "Ranking: least loaded first, ties by machine ID: 0 other units there "
                "(the feasible machines have 0 to 0)",
            ],
            id="placed-no-rules",
        ),
        # every rule kind that holds says what it saw
        pytest.param(
            cluster(
                {
                    "w@1.service": unit(
                        "MachineOf=db.service\nMaxPerMachine=2\n"
                        "MachineMetadata=disk=ssd\nMachineMetadata=cores>=8"
                    ),
                    "w@2.service": unit(),
                    "db.service": unit("Conflicts=x.service"),
                },
                {M1: {"disk": "ssd|nvme", "cores": "16"}, M2: {}},
                {"w@1.service": M1, "w@2.service": M1, "db.service": M1},
            ),
            "w@1.service",
            [
                "Unit w@1.service is placed on 5ab7f3b4.../10.0.0.1.",
                "Desired state: launched (current: inactive)",
                "Rules on 5ab7f3b4:",
                "  MachineOf=db.service: holds (db.service there)",
                "  MachineMetadata cores>=8: holds (cores=16)",
                "  MachineMetadata disk=ssd: holds (disk=ssd|nvme)",
                "  MaxPerMachine=2 w@*.service: holds (1 other unit of w@*.service there)",
                "Feasible machines now: 1 of 2",
                "Ranking: least loaded first, ties by machine ID: 2 other units there "
                "(the feasible machines have 2 to 2)",
            ],
            id="placed-every-rule-holds",
        ),
        # a rule that no longer holds where it is (metadata changed): the engine moves it
        pytest.param(
            cluster(
                {"web.service": unit("MachineMetadata=region!=eu\nConflicts=x.service")},
                {M1: EU},
                {"web.service": M1},
            ),
            "web.service",
            [
                "Unit web.service is placed on 5ab7f3b4.../10.0.0.1.",
                "Desired state: launched (current: inactive)",
                "Rules on 5ab7f3b4:",
                "  MachineMetadata region!=eu: broken: the engine moves it (region=eu)",
                "  Conflicts=x.service: holds (nothing there matches)",
                "Feasible machines now: 0 of 1",
            ],
            id="placed-rule-broken",
        ),
        # Spread: its machine's tier first, then the least loaded
        pytest.param(
            cluster(
                {
                    "s@1.service": unit("Spread=zone"),
                    "s@2.service": unit("Spread=zone"),
                    "s@3.service": unit("Spread=zone"),
                },
                {M1: {"zone": "a"}, M2: {"zone": "b"}, M3: {"zone": "a"}, M4: {}},
                {"s@1.service": M1, "s@2.service": M2, "s@3.service": M3},
            ),
            "s@2.service",
            [
                "Unit s@2.service is placed on 929c22af.../10.0.0.2.",
                "Desired state: launched (current: inactive)",
                "Rules on 929c22af:",
                "  Spread=zone s@*.service: holds (zone=b has 0 other units of s@*.service)",
                "Feasible machines now: 4 of 4",
                "Ranking: Spread=zone s@*.service: tier 1 of 3 (zone=b has 0 other units of "
                "s@*.service); then least loaded first, ties by machine ID: 0 other units "
                "there (the feasible machines have 0 to 1)",
            ],
            id="placed-spread",
        ),
        # Global: per machine, as its agent decides
        pytest.param(
            cluster(
                {
                    "g.service": unit("Global=true\nMachineMetadata=role=web"),
                    "solo.service": unit("Conflicts=g.service"),
                },
                {M1: {"role": "web"}, M2: {"role": "db"}, M3: {"role": "web"}},
                {"solo.service": M3},
                states=(("g.service", M1),),
            ),
            "g.service",
            [
                "Unit g.service is a Global unit: it runs on 1 of 3 machines.",
                "Desired state: launched",
                "Machines:",
                "  5ab7f3b4.../10.0.0.1: runs there (active/running)",
                "  8197e13c.../10.0.0.3: kept off by Conflicts of the units already there "
                "(solo.service has Conflicts=g.service)",
                "  929c22af.../10.0.0.2: kept off by MachineMetadata role=web (role=db)",
            ],
            id="global",
        ),
        # two conflicting Global units: the first by name wins a machine
        pytest.param(
            cluster(
                {
                    "a.service": unit("Global=true\nConflicts=b.service"),
                    "b.service": unit("Global=true"),
                },
                {M1: {}},
            ),
            "b.service",
            [
                "Unit b.service is a Global unit: it runs on 0 of 1 machine.",
                "Desired state: launched",
                "Machines:",
                "  5ab7f3b4.../10.0.0.1: kept off by Conflicts of the units already there "
                "(a.service has Conflicts=b.service)",
            ],
            id="global-conflicting-first-by-name-wins",
        ),
    ],
)
def test_explanation(snapshot: Snapshot, name: str, expected: list[str]) -> None:
    assert lines(snapshot, name) == expected


def test_a_unit_whose_content_is_missing() -> None:
    snapshot = Snapshot(revision=1, jobs={"x.service": Job("x.service", "0" * 40, LAUNCHED)})
    found = explain(snapshot, "x.service")
    assert isinstance(found, Explanation) and found.kind is Kind.UNPLACED
    assert found.reason == "its unit file is missing from the registry"
    assert unplaced_reasons(snapshot) == {"x.service": found.reason}


def test_json_carries_the_same_facts() -> None:
    snapshot = cluster(
        {"web.service": unit("MachineMetadata=region!=eu")},
        {M1: EU, M2: EU, M3: EU, M4: EU, M5: {}},
    )
    found = explain(snapshot, "web.service")
    assert isinstance(found, Explanation)
    doc = found.to_dict()
    assert doc["kind"] == "unplaced" and doc["machine"] is None
    assert doc["reason"] == "no machine matches MachineMetadata region!=eu"
    assert (doc["machines"], doc["feasible"]) == (5, 0)
    assert doc["rejections"] == [
        {
            "rule": "MachineMetadata region!=eu",
            "rejected": 5,
            "machines": 5,
            "examples": [
                {"machine": "5ab7f3b4", "detail": "region=eu"},
                {"machine": "8197e13c", "detail": "region=eu"},
                {"machine": "929c22af", "detail": "region=eu"},
            ],
            "more": 2,
        }
    ]
    assert doc["lines"] == found.lines() and doc["summary"] == found.lines()[0]

    placed = explain(cluster({"h.service": unit()}, {M1: {}}, {"h.service": M1}), "h.service")
    assert isinstance(placed, Explanation)
    assert placed.to_dict()["machine"] == {"id": M1, "primaryIP": "10.0.0.1"}


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        # everything placed (or not wanting a machine): nothing, and no plan is needed
        pytest.param(
            cluster(
                {
                    "a.service": unit(),
                    "b.service": (unit(), INACTIVE),
                    "g.service": unit("Global=true\nMachineMetadata=role=none"),
                },
                {M1: {}},
                {"a.service": M1},
            ),
            {},
            id="none",
        ),
        # units without a machine, each with the planner's reason (or why not yet)
        pytest.param(
            cluster(
                {
                    "a.service": unit(),
                    "web.service": unit("MachineMetadata=region!=eu"),
                    "gone.service": unit("MachineMetadata=region=eu"),
                },
                {M1: EU},
                {"gone.service": M6},
            ),
            {
                "a.service": "not placed yet: a machine can take it, the engine has not placed it",
                "gone.service": "not placed yet: a machine can take it, the engine has not "
                "placed it",
                "web.service": "no machine matches MachineMetadata region!=eu",
            },
            id="some",
        ),
    ],
)
def test_unplaced_reasons(snapshot: Snapshot, expected: dict[str, str]) -> None:
    assert unplaced_reasons(snapshot) == expected


# ---- properties -----------------------------------------------------------------------------

NAMES = [f"u{i}.service" for i in range(6)]
MIDS = [M1, M2, M3]


@st.composite
def registries(draw: st.DrawFn) -> Snapshot:
    """Random small clusters: every rule kind, placements (some on a machine that left)."""
    rules = st.sampled_from([
        "", "Global=true", "Conflicts=u*.service", "Conflicts=u1.service", "MachineOf=u0.service",
        "MachineMetadata=role=web", "MachineMetadata=role!=db", f"MachineID={M2[:8]}",
        "MaxPerMachine=1 u*.service", "Spread=role u*.service", "Replaces=u2.service",
    ])  # fmt: skip
    units = {
        name: (unit(draw(rules)), draw(st.sampled_from([INACTIVE, LOADED, LAUNCHED])))
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=6))
    }
    machines = {
        mid: {"role": draw(st.sampled_from(["web", "db"]))}
        for mid in draw(st.lists(st.sampled_from(MIDS), unique=True, max_size=3))
    }
    placements = {
        name: draw(st.sampled_from([*MIDS, M6]))
        for name in draw(st.lists(st.sampled_from(list(units)), unique=True))
    }
    return cluster(units, machines, placements, leader=draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(registries())
def test_every_unit_is_explained_as_the_planner_sees_it(snapshot: Snapshot) -> None:
    plan = plan_for(snapshot, {})
    reasons = unplaced_reasons(snapshot)
    for name, job in snapshot.jobs.items():
        found = explain(snapshot, name)
        assert isinstance(found, Explanation)
        assert found.lines()[0] == found.summary and found.to_dict()["lines"] == found.lines()
        is_global = snapshot.units[job.unit_hash].unit.requirements(name).is_global
        placed = snapshot.placements.get(name)
        if job.desired is INACTIVE:
            assert found.kind is Kind.INACTIVE
        elif is_global:
            assert found.kind is Kind.GLOBAL and len(found.on_machines) == len(snapshot.machines)
        elif placed in snapshot.machines:
            assert found.kind is Kind.PLACED and found.machine is not None
            assert found.machine.id == placed
        else:
            # the planner's reason, the same in x/why and x/unplaced
            assert found.kind is Kind.UNPLACED and reasons[name] == found.reason
            assert found.reason == plan.unplaced.get(name, found.reason)
            for r in found.rejections:
                assert r.rejected <= r.machines == len(snapshot.machines)
                assert len(r.examples) == min(r.rejected, 3)
        assert (found.kind is Kind.UNPLACED) == (name in reasons)
