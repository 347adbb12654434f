"""Where a Global unit runs: one rule (`globals_on`), asked by the scheduler and every agent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.model import Job, JobState, UnitContent
from fleetd.reconcile.agent import AgentJob, desired_units
from fleetd.reconcile.globals import globals_on, is_global, runs_globally
from fleetd.reconcile.scheduler import ClusterState, JobSpec, MachineSpec
from fleetd.registry import Snapshot
from fleetd.unit import Requirements, parse_unit

ME = "1" * 32
LAUNCHED, LOADED, INACTIVE = JobState.LAUNCHED, JobState.LOADED, JobState.INACTIVE


def reqs(name: str, xfleet: str = "") -> Requirements:
    unit = parse_unit(f"[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n{xfleet}\n")
    return unit.requirements(name)


def plain(name: str, xfleet: str = "") -> Requirements:
    text = "[Service]\nExecStart=/bin/true\n" + (f"[X-Fleet]\n{xfleet}\n" if xfleet else "")
    return parse_unit(text).requirements(name)


@pytest.mark.parametrize(
    ("candidates", "placed", "metadata", "expected"),
    [
        pytest.param({}, {}, {}, [], id="none"),
        # no rule: every machine
        pytest.param({"g.service": reqs("g.service")}, {}, {}, ["g.service"], id="everywhere"),
        # MachineMetadata: only machines that match (OR within a key, AND across keys)
        pytest.param({"g.service": reqs("g.service", "MachineMetadata=role=web")}, {},
                     {"role": "web"}, ["g.service"], id="metadata-match"),
        pytest.param({"g.service": reqs("g.service", "MachineMetadata=role=web")}, {},
                     {"role": "db"}, [], id="metadata-mismatch"),
        pytest.param({"g.service": reqs("g.service", "MachineMetadata=role=web\n"
                                                     "MachineMetadata=role=db")}, {},
                     {"role": "db"}, ["g.service"], id="metadata-or"),
        pytest.param({"g.service": reqs("g.service", "MachineMetadata=role=web\n"
                                                     "MachineMetadata=disk=ssd")}, {},
                     {"role": "web"}, [], id="metadata-and"),
        # its own Conflicts against a unit placed there: the placed unit keeps the machine
        pytest.param({"g.service": reqs("g.service", "Conflicts=hello.service")},
                     {"hello.service": plain("hello.service")}, {}, [], id="conflicts-placed"),
        # a placed unit's Conflicts against it (fleet honours either side's rule)
        pytest.param({"g.service": reqs("g.service")},
                     {"hello.service": plain("hello.service", "Conflicts=g.service")}, {}, [],
                     id="placed-conflicts-it"),
        # glob patterns
        pytest.param({"g.service": reqs("g.service", "Conflicts=apache@*.service")},
                     {"apache@80.service": plain("apache@80.service")}, {}, [], id="glob"),
        # a placed unit it does not conflict with: both run
        pytest.param({"g.service": reqs("g.service", "Conflicts=other.service")},
                     {"hello.service": plain("hello.service")}, {}, ["g.service"],
                     id="no-conflict"),
        # two conflicting Global units: the first by name wins, whichever holds the rule
        pytest.param({"g1.service": reqs("g1.service", "Conflicts=g2.service"),
                      "g2.service": reqs("g2.service")}, {}, {}, ["g1.service"],
                     id="first-by-name-own-rule"),
        pytest.param({"g1.service": reqs("g1.service"),
                      "g2.service": reqs("g2.service", "Conflicts=g1.service")}, {}, {},
                     ["g1.service"], id="first-by-name-their-rule"),
        # a Global unit left out (metadata) keeps no one else away
        pytest.param({"g1.service": reqs("g1.service", "Conflicts=g2.service\n"
                                                       "MachineMetadata=role=web"),
                      "g2.service": reqs("g2.service")}, {}, {"role": "db"}, ["g2.service"],
                     id="excluded-does-not-block"),
    ],
)  # fmt: skip
def test_globals_on(candidates, placed, metadata, expected) -> None:
    assert globals_on(metadata, candidates, placed) == expected


@pytest.mark.parametrize(
    ("desired", "requirements", "expected"),
    [
        pytest.param(LAUNCHED, reqs("g.service"), True, id="launched"),
        pytest.param(LOADED, reqs("g.service"), True, id="loaded"),  # loaded everywhere
        pytest.param(INACTIVE, reqs("g.service"), False, id="inactive"),
        pytest.param(LAUNCHED, plain("a.service"), False, id="not-global"),
    ],
)
def test_runs_globally(desired, requirements, expected) -> None:
    assert runs_globally(desired, requirements) is expected


GLOBAL = parse_unit("[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n")
PLAIN = parse_unit("[Service]\nExecStart=/bin/true\n")


@pytest.mark.parametrize(
    ("unit", "known", "expected"),
    [
        pytest.param(GLOBAL, True, True, id="global"),
        pytest.param(PLAIN, True, False, id="plain"),
        # the content has not arrived (or is corrupt): not known to be Global
        pytest.param(GLOBAL, False, False, id="content-unknown"),
    ],
)
def test_is_global(unit, known, expected) -> None:
    snapshot = Snapshot(1, units={unit.hash: UnitContent(unit)} if known else {})
    assert is_global(snapshot, Job("g.service", unit.hash, LAUNCHED)) is expected


def test_the_scheduler_counts_only_the_global_units_a_machine_runs() -> None:
    # g2 loses to g1 everywhere: it neither loads the machine nor keeps its neighbours away
    jobs = {
        "g1.service": JobSpec("g1.service", LAUNCHED, reqs("g1.service", "Conflicts=g2.service")),
        "g2.service": JobSpec("g2.service", LAUNCHED, reqs("g2.service")),
        "inactive.service": JobSpec("inactive.service", INACTIVE, reqs("inactive.service")),
    }
    state = ClusterState([MachineSpec(ME)], jobs, {})
    assert state.globals_on[ME] == {"g1.service"}
    assert state.load(ME) == 1


# ---- a property: the scheduler and the agents agree on where Global units run

NAMES = [f"g{i}.service" for i in range(5)]
ROLES = ["web", "db"]


@st.composite
def global_jobs(draw: st.DrawFn) -> dict[str, tuple[JobState, Requirements]]:
    out = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=5)):
        lines = []
        if draw(st.booleans()):
            lines.append(f"Conflicts={draw(st.sampled_from([*NAMES, 'g*.service']))}")
        if draw(st.booleans()):
            lines.append(f"MachineMetadata=role={draw(st.sampled_from(ROLES))}")
        desired = draw(st.sampled_from([INACTIVE, LOADED, LAUNCHED]))
        out[name] = (desired, reqs(name, "\n".join(lines)))
    return out


@settings(max_examples=300, deadline=None)
@given(global_jobs(), st.lists(st.sampled_from(ROLES), min_size=1, max_size=3))
def test_scheduler_and_agents_agree(jobs, roles) -> None:
    machines = [MachineSpec(f"{i}" * 32, {"role": role}) for i, role in enumerate(roles)]
    specs = {n: JobSpec(n, d, r) for n, (d, r) in jobs.items()}
    state = ClusterState(machines, specs, {})
    for machine in machines:
        agent_jobs = {n: AgentJob(n, "h", d, r) for n, (d, r) in jobs.items()}
        here = desired_units(machine.id, machine.metadata, agent_jobs, {})
        assert state.globals_on[machine.id] == set(here)
        assert state.load(machine.id) == len(here)
