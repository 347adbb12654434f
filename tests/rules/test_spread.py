"""Spread=KEY [GLOB]: a soft preference for the value of KEY with the fewest of the group."""

from __future__ import annotations

from collections import Counter

import pytest

from fleetd.reconcile.engine import plan_engine
from fleetd.reconcile.scheduler import MachineSpec
from fleetd.rules import UnitValidationError
from fleetd.rules.spread import Spread
from tests.rules.helpers import applied, job, jobs_of, req

# three racks, two machines each
RACKS = [MachineSpec(f"{i:032x}", {"rack": f"r{i % 3}"}) for i in range(6)]
RACK_OF = {m.id: m.metadata["rack"] for m in RACKS}


def racks(placed: dict[str, str]) -> Counter[str]:
    return Counter(RACK_OF[mid] for mid in placed.values())


@pytest.mark.parametrize(
    ("lines", "name", "expected"),
    [
        ("Spread=rack", "web@1.service", Spread("rack", "web@*.service")),
        ("Spread=rack web-*", "web-1.service", Spread("rack", "web-*")),
        ("Spread=dc\nSpread=rack", "a@1.service", Spread("rack", "a@*.service")),
    ],
)
def test_reads(lines: str, name: str, expected: Spread) -> None:
    r = req(lines, name)
    r.validate()
    assert r.term("Spread") == expected


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "Spread=ra/ck",
            "Spread=ra/ck: 'ra/ck' is not a metadata key (letters, digits, '_', '.' and '-')",
        ),
        ("Spread=rack\nGlobal=true", "Spread cannot be used with Global"),
        ("Spread=rack\nMachineID=12345678", "Spread cannot be used with MachineID"),
        ("Spread=rack a b", "Spread=rack a b: expected one value and, optionally, a glob"),
    ],
)
def test_refused(lines: str, message: str) -> None:
    with pytest.raises(UnitValidationError) as err:
        req(lines, "web@1.service").validate()
    assert str(err.value) == message


@pytest.mark.parametrize("count", [3, 7, 9, 12])
def test_instances_split_evenly_over_the_racks(count: int) -> None:
    jobs = jobs_of(*(job(f"web@{i}.service", "Spread=rack") for i in range(count)))
    per_rack = racks(applied(plan_engine(jobs, RACKS, {}), {}))
    assert max(per_rack.values()) - min(per_rack.values()) <= 1
    assert sum(per_rack.values()) == count


def test_other_units_do_not_skew_the_spread_but_break_ties_by_load() -> None:
    jobs = jobs_of(
        *(job(f"other{i}.service", "MachineMetadata=rack=r0") for i in range(4)),
        *(job(f"web@{i}.service", "Spread=rack") for i in range(3)),
    )
    placed = applied(plan_engine(jobs, RACKS, {}), {})
    assert racks({n: m for n, m in placed.items() if n.startswith("web")}) == {
        "r0": 1, "r1": 1, "r2": 1,
    }  # fmt: skip


def test_after_a_racks_machines_die_the_survivors_differ_by_at_most_one() -> None:
    jobs = jobs_of(*(job(f"web@{i}.service", "Spread=rack") for i in range(9)))
    before = applied(plan_engine(jobs, RACKS, {}), {})
    survivors = [m for m in RACKS if m.metadata["rack"] != "r0"]
    after = applied(plan_engine(jobs, survivors, before), before)
    assert len(after) == 9
    per_rack = racks(after)
    assert set(per_rack) == {"r1", "r2"}
    assert abs(per_rack["r1"] - per_rack["r2"]) <= 1
    # nothing that ran on a surviving rack moved
    assert all(after[n] == m for n, m in before.items() if RACK_OF[m] != "r0")


def test_machines_without_the_key_come_last_and_spread_never_refuses() -> None:
    keyless = MachineSpec("f" * 32)
    jobs = jobs_of(*(job(f"web@{i}.service", "Spread=rack\nMaxPerMachine=1") for i in range(7)))
    placed = applied(plan_engine(jobs, [*RACKS, keyless], {}), {})
    assert len(placed) == 7
    assert placed["web@6.service"] == keyless.id  # the six keyed machines first
