"""A machine's short ID, defined once: what `MachineID=` accepts and what messages show."""

from __future__ import annotations

import pytest

from fleetd.model import JobState, Machine, short_id
from fleetd.reconcile.engine import plan_engine
from fleetd.reconcile.scheduler import JobSpec, MachineSpec
from fleetd.unit import parse_unit

MID = "5ab7f3b47ecc47a0a777884d749db537"
TWIN = "5ab7f3b4" + "0" * 24  # the same short ID as MID
OTHER = "9" * 32


@pytest.mark.parametrize(
    ("machine_id", "expected"),
    [
        pytest.param(MID, "5ab7f3b4", id="full-id"),
        pytest.param("5ab7f3b4", "5ab7f3b4", id="already-short"),
        pytest.param("abc", "abc", id="shorter"),  # a hand-made ID is shown whole
        pytest.param("", "", id="empty"),  # an unknown machine
    ],
)
def test_short_id(machine_id, expected) -> None:
    assert short_id(machine_id) == expected


def test_every_layer_shows_the_same_short_id() -> None:
    assert Machine(MID).short_id == MachineSpec(MID).short_id == short_id(MID) == "5ab7f3b4"


def spec(xfleet: str) -> JobSpec:
    unit = parse_unit(f"[Service]\nExecStart=/bin/true\n[X-Fleet]\n{xfleet}\n")
    return JobSpec("a.service", JobState.LAUNCHED, unit.requirements("a.service"))


@pytest.mark.parametrize(
    ("wanted", "machines", "placed"),
    [
        pytest.param(MID, [MID, OTHER], MID, id="full"),
        pytest.param("5ab7f3b4", [OTHER, MID], MID, id="short"),
        # two machines share the short ID: either may take it, ties by ID as always
        pytest.param("5ab7f3b4", [MID, TWIN], TWIN, id="short-shared"),
        # only the 8-character form is a short ID: a shorter or longer prefix names nothing
        pytest.param("5ab7f3b", [MID], None, id="seven-characters"),
        pytest.param("5ab7f3b47", [MID], None, id="nine-characters"),
    ],
)
def test_machine_id_accepts_the_short_id(wanted, machines, placed) -> None:
    plan = plan_engine(
        {"a.service": spec(f"MachineID={wanted}")}, [MachineSpec(m) for m in machines], {}
    )
    assert [t.machine_id for t in plan.tasks] == ([placed] if placed else [])


def test_unplaced_reasons_name_machines_by_their_short_id() -> None:
    plan = plan_engine(
        {"a.service": spec("MachineMetadata=role=db")},
        [MachineSpec(MID, {"role": "web"}), MachineSpec(OTHER)],
        {},
    )
    assert plan.unplaced == {"a.service": "no machine matches MachineMetadata role=db"}
    conflicted = plan_engine(
        {"a.service": spec("Conflicts=b.service"), "b.service": spec(f"MachineID={MID}")},
        [MachineSpec(MID)],
        {"b.service": MID},
    )
    assert conflicted.unplaced == {"a.service": "conflicts with b.service (5ab7f3b4)"}
