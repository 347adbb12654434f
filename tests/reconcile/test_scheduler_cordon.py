"""The scheduler and the engine's planner with a cordoned machine, as tables: no new unit goes
there whatever its rules, the units there stay, and the refusal reads "machine is cordoned"
(fleetd/reconcile/scheduler.py, engine.py). Pure."""

from __future__ import annotations

import pytest

from fleetd.model import JobState
from fleetd.reconcile.engine import Action, plan_engine
from fleetd.reconcile.scheduler import ClusterState, JobSpec, MachineSpec, every_refusal, place
from fleetd.rules import RejectReason
from fleetd.unit import parse_unit

A, B, C = "a" * 32, "b" * 32, "c" * 32


def spec(name: str, x_fleet: str = "") -> JobSpec:
    unit = parse_unit(f"[Service]\nExecStart=/bin/true\n[X-Fleet]\n{x_fleet}\n")
    return JobSpec(name, JobState.LAUNCHED, unit.requirements(name))


def machines(cordoned: str = A) -> list[MachineSpec]:
    meta = {
        A: {"disk": "ssd", "zone": "1", "fleet.memory": "4G"},
        B: {"zone": "2"},
        C: {"zone": "3"},
    }
    return [MachineSpec(m, meta[m], m == cordoned) for m in (A, B, C)]


@pytest.mark.parametrize(
    ("x_fleet", "expect"),
    [
        # the least loaded machine (ties by ID) is A: cordoned, B takes it
        ("", B),
        # only A may take it: nowhere
        (f"MachineID={A}", None),
        ("MachineMetadata=disk=ssd", None),
        # a ranking rule's first tier is not spared
        ("Spread=zone", B),
        # only A says what it offers: nowhere
        ("MemoryReservation=1G", None),
    ],
    ids=["plain", "machine-id", "metadata", "spread", "reserving"],
)
def test_no_new_unit_on_a_cordoned_machine(x_fleet: str, expect: str | None) -> None:
    job = spec("new.service", x_fleet)
    state = ClusterState(machines(), {job.name: job}, {})
    found, rejections = place(job, state)
    assert found == expect
    if expect is None:
        assert RejectReason.CORDONED in {r.reason for r in rejections}
        assert any(r.text == "machine is cordoned" and r.machine_id == A for r in rejections)


def test_units_there_stay_and_a_broken_rule_still_moves_one() -> None:
    jobs = {
        "stays.service": spec("stays.service"),
        "pinned.service": spec("pinned.service", f"MachineID={A}"),
        "broken.service": spec("broken.service", "MachineMetadata=zone=2"),
    }
    placements = dict.fromkeys(jobs, A)
    plan = plan_engine(jobs, machines(), placements)
    moves = {(t.job, t.action, t.machine_id) for t in plan.tasks}
    assert moves == {
        ("broken.service", Action.UNSCHEDULE, A),
        ("broken.service", Action.SCHEDULE, B),
    }


def test_every_refusal_names_the_cordon_first() -> None:
    job = spec("new.service", "MachineMetadata=zone=9")
    state = ClusterState(machines(), {job.name: job}, {})
    assert [r.reason for r in every_refusal(job, A, state)] == [
        RejectReason.CORDONED,
        RejectReason.METADATA,
    ]
    assert [r.reason for r in every_refusal(job, B, state)] == [RejectReason.METADATA]


def test_nothing_cordoned_plans_as_before() -> None:
    jobs = {f"u{i}.service": spec(f"u{i}.service") for i in range(6)}
    plain = plan_engine(jobs, [MachineSpec(m.id, m.metadata) for m in machines()], {})
    uncordoned = plan_engine(jobs, machines(cordoned=""), {})
    assert plain == uncordoned
    assert {t.machine_id for t in plain.tasks} == {A, B, C}
