"""Reservations (MemoryReservation=, CPUReservation=, else MemoryMax=/MemoryLimit=/CPUQuota=):
reading them, what a machine offers, plans that never over-commit, the strategies."""

from __future__ import annotations

import pytest

from fleetd.model import JobState
from fleetd.reconcile.engine import plan_engine
from fleetd.reconcile.globals import globals_on, globals_refused
from fleetd.reconcile.scheduler import ClusterState, JobSpec, MachineSpec, Strategy
from fleetd.rules import Capacity, Requirements, UnitValidationError
from fleetd.rules.resources import Reservation, capacity_of, host_policy, show_size
from fleetd.unit import parse_unit
from tests.rules.helpers import applied, jobs_of

G = 1 << 30
M = 1 << 20


def unit_req(text: str, name: str = "u.service") -> Requirements:
    return parse_unit(text).requirements(name)


def reserving(name: str, xfleet: str = "", service: str = "") -> JobSpec:
    text = (
        "[Service]\nExecStart=/bin/true\n" + service + (f"[X-Fleet]\n{xfleet}\n" if xfleet else "")
    )
    return JobSpec(name, JobState.LAUNCHED, unit_req(text, name))


def machine(n: int, memory: str = "", cpus: str = "", **more: str) -> MachineSpec:
    facts = {"fleet.memory": memory, "fleet.cpus": cpus} | {
        k.replace("_", "."): v for k, v in more.items()
    }
    return MachineSpec(str(n) * 32, {k: v for k, v in facts.items() if v})


@pytest.mark.parametrize(
    ("xfleet", "service", "memory", "cpus", "reads"),
    [
        ("MemoryReservation=512M", "", 512 * M, 0.0, "MemoryReservation=512M"),
        ("CPUReservation=1.5", "", 0, 1.5, "CPUReservation=1.5"),
        ("MemoryReservation=1G\nCPUReservation=0.25", "", G, 0.25, "MemoryReservation=1G CPUReservation=0.25"),
        # what systemd enforces, when the unit says nothing in [X-Fleet]
        ("", "MemoryMax=2G\n", 2 * G, 0.0, "MemoryMax=2G"),
        ("", "MemoryLimit=256M\n", 256 * M, 0.0, "MemoryLimit=256M"),
        ("", "MemoryMax=1G\nMemoryLimit=4G\n", G, 0.0, "MemoryMax=1G"),
        ("", "CPUQuota=200%\n", 0, 2.0, "CPUQuota=200%"),
        ("", "CPUQuota=50%\nMemoryMax=1073741824\n", G, 0.5, "MemoryMax=1073741824 CPUQuota=50%"),
        ("", "MemoryMax=1G\nMemoryMax=2G\n", 2 * G, 0.0, "MemoryMax=2G"),  # the last one wins
        # [X-Fleet] wins over [Service]
        ("MemoryReservation=100M", "MemoryMax=2G\n", 100 * M, 0.0, "MemoryReservation=100M"),
    ],
)  # fmt: skip
def test_reads(xfleet: str, service: str, memory: int, cpus: float, reads: str) -> None:
    text = (
        "[Service]\nExecStart=/bin/true\n" + service + (f"[X-Fleet]\n{xfleet}\n" if xfleet else "")
    )
    r = unit_req(text)
    r.validate()
    term = r.term("Reservation")
    assert isinstance(term, Reservation)
    assert (term.memory, term.cpus, str(term)) == (memory, cpus, reads)
    assert r.reserves == (memory, cpus)
    assert r.unknown == ()  # MemoryReservation is no unknown option


@pytest.mark.parametrize(
    "service",
    ["MemoryMax=50%\n", "MemoryMax=infinity\n", "CPUQuota=\n", "", "MemoryLow=1G\n"],
)
def test_what_reserves_nothing(service: str) -> None:
    r = unit_req("[Service]\nExecStart=/bin/true\n" + service)
    assert r.term("Reservation") is None and r.reserves == (0, 0)


@pytest.mark.parametrize(
    ("xfleet", "message"),
    [
        ("MemoryReservation=lots", "MemoryReservation=lots: not a size (bytes, or with K, M, G, T: 512M)"),
        ("MemoryReservation=-1G", "MemoryReservation=-1G: not a size (bytes, or with K, M, G, T: 512M)"),
        ("CPUReservation=two", "CPUReservation=two: not a number of CPUs (1, 1.5)"),
        ("CPUReservation=150%", "CPUReservation=150%: not a number of CPUs (1, 1.5)"),
    ],
)  # fmt: skip
def test_refused(xfleet: str, message: str) -> None:
    with pytest.raises(UnitValidationError) as err:
        unit_req(f"[X-Fleet]\n{xfleet}\n").validate()
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("facts", "capacity"),
    [
        ({"fleet.memory": str(8 * G), "fleet.cpus": "4"}, Capacity(8 * G, 4.0)),
        (
            {"fleet.memory": str(8 * G), "fleet.cpus": "4", "fleet.memory-reserved": str(G),
             "fleet.cpus-reserved": "0.5"},
            Capacity(7 * G, 3.5),
        ),
        ({"fleet.memory": str(G), "fleet.memory-reserved": str(2 * G)}, Capacity(0, None)),
        ({}, Capacity(None, None)),
        ({"fleet.cpus": "2", "fleet.overcommit": "true"}, Capacity(None, 2.0, True)),
    ],
)  # fmt: skip
def test_capacity_of(facts: dict[str, str], capacity: Capacity) -> None:
    assert capacity_of(facts) == capacity


def test_host_policy_publishes_only_what_differs_from_the_defaults() -> None:
    assert host_policy(0, 0.0, False) == {}
    assert host_policy(512 * M, 0.5, True) == {
        "fleet.memory-reserved": str(512 * M), "fleet.cpus-reserved": "0.5",
        "fleet.overcommit": "true",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("n", "shown"), [(512 * M, "512M"), (1536 * M, "1.5G"), (3, "3B"), (G, "1G")]
)
def test_show_size(n: int, shown: str) -> None:
    assert show_size(n) == shown


def test_units_go_only_where_they_fit_and_the_rest_wait_with_the_reason() -> None:
    small, big = machine(1, str(2 * G), "2"), machine(2, str(8 * G), "4")
    jobs = jobs_of(*(reserving(f"b{i}.service", "MemoryReservation=1G") for i in range(12)))
    plan = plan_engine(jobs, [small, big], {})
    placed = applied(plan, {})
    assert (
        sorted(placed.values()).count(small.id) == 2 and sorted(placed.values()).count(big.id) == 8
    )
    assert len(plan.unplaced) == 2
    assert all(
        r.startswith("memory exhausted on 2 machines (11111111, 22222222)")
        for r in plan.unplaced.values()
    )


def test_cpu_and_memory_both_count() -> None:
    m = machine(1, str(8 * G), "2")
    jobs = jobs_of(*(reserving(f"c{i}.service", "CPUReservation=0.75") for i in range(3)))
    plan = plan_engine(jobs, [m], {})
    assert len(applied(plan, {})) == 2
    assert set(plan.unplaced.values()) == {"cpu exhausted (11111111)"}


def test_a_machine_that_does_not_say_takes_no_reserving_unit_but_any_other() -> None:
    silent = machine(1)
    jobs = jobs_of(reserving("r.service", "MemoryReservation=1M"), reserving("plain.service"))
    plan = plan_engine(jobs, [silent], {})
    assert applied(plan, {}) == {"plain.service": silent.id}
    assert plan.unplaced["r.service"].startswith("memory unknown")


def test_a_machine_that_allows_overcommit_takes_anything() -> None:
    m = machine(1, str(G), "1", fleet_overcommit="true")
    jobs = jobs_of(*(reserving(f"b{i}.service", "MemoryReservation=1G") for i in range(3)))
    assert len(applied(plan_engine(jobs, [m], {}), {})) == 3


def test_what_the_host_keeps_is_not_given() -> None:
    m = machine(1, str(4 * G), "4", **{"fleet_memory-reserved": str(2 * G)})
    jobs = jobs_of(*(reserving(f"b{i}.service", "MemoryReservation=1G") for i in range(3)))
    assert len(applied(plan_engine(jobs, [m], {}), {})) == 2


def test_global_units_count_and_one_that_does_not_fit_runs_nowhere_there() -> None:
    m = machine(1, str(2 * G), "2")
    g = reserving("g.service", "Global=true\nMemoryReservation=1536M")
    jobs = jobs_of(g, reserving("b.service", "MemoryReservation=1G"))
    plan = plan_engine(jobs, [m], {})
    assert applied(plan, {}) == {}  # the Global unit takes 1.5G of 2G: no room for 1G
    assert plan.unplaced["b.service"].startswith("memory exhausted")
    huge = {"h.service": unit_req("[X-Fleet]\nGlobal=true\nMemoryReservation=4G\n", "h.service")}
    assert globals_on(m.metadata, huge) == []
    # ... unless it runs there already (the machine shrank): it is not stopped for room, and
    # the scheduler counts it there (nothing else that reserves fits beside it)
    assert globals_on(m.metadata, huge, running={"h.service"}) == ["h.service"]
    jobs = jobs_of(reserving("h.service", "Global=true\nMemoryReservation=4G"),
                   reserving("b.service", "MemoryReservation=1M"))  # fmt: skip
    state = ClusterState([m], jobs, {}, settled={("h.service", m.id)})
    assert state.reserved_on(m.id) == (4 * G, 0.0)
    assert (
        plan_engine(jobs, [m], {}, settled={("h.service", m.id)})
        .unplaced["b.service"]
        .startswith("memory exhausted")
    )
    # and the agent says why it does not run it (globals_refused, logged as it changes)
    assert globals_refused(m.metadata, huge) == {"h.service": "memory exhausted"}
    assert globals_refused({}, huge) == {
        "h.service": "memory unknown (the machine does not say what it offers)"
    }


def test_a_machine_that_shrank_keeps_what_runs_there_but_takes_no_more() -> None:
    m = machine(1, str(2 * G), "2")  # it had 4G when these were placed
    jobs = jobs_of(
        *(reserving(f"b{i}.service", "MemoryReservation=1G") for i in range(3)),
        reserving("new.service", "MemoryReservation=1M"),
    )
    before = {f"b{i}.service": m.id for i in range(3)}
    plan = plan_engine(jobs, [m], before, settled={(n, m.id) for n in before})
    assert applied(plan, before) == before  # nothing moved for room
    assert plan.unplaced["new.service"].startswith("memory exhausted")


def test_a_unit_whose_reservation_grew_is_checked_again_until_its_machine_runs_it() -> None:
    small, big = machine(1, str(2 * G), "2"), machine(2, str(8 * G), "2")
    jobs = jobs_of(reserving("a.service", "MemoryReservation=4G"))  # was 1G on small
    before = {"a.service": small.id}
    assert applied(plan_engine(jobs, [small, big], before, settled=()), before) == {
        "a.service": big.id
    }
    # once small runs the new content, it is not moved (the machine is over-committed)
    assert plan_engine(jobs, [small, big], before, settled={("a.service", small.id)}).tasks == ()


def test_binpack_fills_machines_and_spread_uses_the_roomiest_first() -> None:
    machines = [machine(i, str(4 * G), "4") for i in range(1, 5)]
    jobs = jobs_of(*(reserving(f"b{i}.service", "MemoryReservation=1G") for i in range(4)))
    packed = applied(plan_engine(jobs, machines, {}, strategy=Strategy.BINPACK), {})
    assert len(set(packed.values())) == 1  # 4 x 1G in one 4G machine
    spread = applied(plan_engine(jobs, machines, {}, strategy=Strategy.SPREAD), {})
    assert len(set(spread.values())) == 4
    least = applied(plan_engine(jobs, machines, {}, strategy=Strategy.LEASTLOADED), {})
    assert len(set(least.values())) == 4  # fleet's order: fewest units first


def test_binpack_places_the_largest_first() -> None:
    machines = [machine(1, str(3 * G), "4"), machine(2, str(3 * G), "4")]
    jobs = jobs_of(
        reserving("a.service", "MemoryReservation=1G"),
        reserving("b.service", "MemoryReservation=1G"),
        reserving("c.service", "MemoryReservation=2G"),
        reserving("d.service", "MemoryReservation=2G"),
    )
    placed = applied(plan_engine(jobs, machines, {}, strategy=Strategy.BINPACK), {})
    assert len(placed) == 4  # by name order 1G, 1G, 2G would leave a 2G unit without room


def test_the_state_adds_up_what_is_reserved() -> None:
    m = machine(1, str(4 * G), "4")
    jobs = jobs_of(reserving("a.service", "MemoryReservation=1G\nCPUReservation=0.5"))
    state = ClusterState([m], jobs, {"a.service": m.id})
    assert state.reserved_on(m.id) == (G, 0.5)
    state.unassign("a.service")
    assert state.reserved_on(m.id) == (0, 0.0)
