"""MaxPerMachine=N [GLOB]: its group, its refusals at submit, and plans that honour it."""

from __future__ import annotations

from collections import Counter

import pytest

from fleetd.reconcile.engine import plan_engine
from fleetd.reconcile.globals import globals_on
from fleetd.reconcile.scheduler import MachineSpec
from fleetd.rules import UnitValidationError, glob_match
from fleetd.rules.max_per_machine import MaxPerMachine
from tests.rules.helpers import applied, job, jobs_of, req

MACHINES = [MachineSpec(str(i) * 32) for i in range(1, 5)]


@pytest.mark.parametrize(
    ("lines", "name", "expected"),
    [
        ("MaxPerMachine=2", "web@3.service", MaxPerMachine(2, "web@*.service")),
        ("MaxPerMachine=2", "web-3.service", MaxPerMachine(2, "web-*.service")),
        ("MaxPerMachine=2", "hello.1.service", MaxPerMachine(2, "hello.*.service")),
        ("MaxPerMachine=1", "db.service", MaxPerMachine(1, "db.service")),
        ("MaxPerMachine=3 web-?.service", "web-3.service", MaxPerMachine(3, "web-?.service")),
        ("MaxPerMachine=2 %p-*.service", "api@1.service", MaxPerMachine(2, "api-*.service")),
        ("MaxPerMachine=1\nMaxPerMachine=4", "a@1.service", MaxPerMachine(4, "a@*.service")),
        # systemd's escapes in a name stay literal in its group
        ("MaxPerMachine=1", "a\\x2db@1.service", MaxPerMachine(1, "a\\\\x2db@*.service")),
    ],
)
def test_groups(lines: str, name: str, expected: MaxPerMachine) -> None:
    r = req(lines, name)
    r.validate()
    assert r.term("MaxPerMachine") == expected
    if " " not in lines:  # a default group holds the unit itself
        assert glob_match(expected.group, name)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("MaxPerMachine=0", "MaxPerMachine=0: '0' is not a whole number of at least 1"),
        ("MaxPerMachine=two", "MaxPerMachine=two: 'two' is not a whole number of at least 1"),
        ("MaxPerMachine=-1", "MaxPerMachine=-1: '-1' is not a whole number of at least 1"),
        ("MaxPerMachine=1.5", "MaxPerMachine=1.5: '1.5' is not a whole number of at least 1"),
        (
            "MaxPerMachine=2 a b",
            "MaxPerMachine=2 a b: expected one value and, optionally, a glob",
        ),
        (
            "MaxPerMachine=2 web[",
            "MaxPerMachine=2 web[: 'web[' is not a valid pattern (Go's path.Match syntax)",
        ),
    ],
)
def test_refused(lines: str, message: str) -> None:
    with pytest.raises(UnitValidationError) as err:
        req(lines, "web@1.service").validate()
    assert str(err.value) == message


def test_ten_instances_on_four_machines_place_eight_and_say_why_of_two() -> None:
    jobs = jobs_of(*(job(f"web@{i}.service", "MaxPerMachine=2") for i in range(10)))
    plan = plan_engine(jobs, MACHINES, {})
    placed = applied(plan, {})
    assert len(placed) == 8
    assert set(Counter(placed.values()).values()) == {2}
    assert sorted(plan.unplaced) == ["web@8.service", "web@9.service"]
    assert plan.unplaced["web@8.service"].startswith(
        "MaxPerMachine=2: 2 of web@*.service there already on 4 machines (11111111, 22222222, "
        "33333333 and 1 more)"
    )


def test_other_groups_do_not_count() -> None:
    jobs = jobs_of(
        *(job(f"web@{i}.service", "MaxPerMachine=1") for i in range(2)),
        *(job(f"api@{i}.service") for i in range(6)),
    )
    plan = plan_engine(jobs, MACHINES[:1], {})
    assert sorted(plan.unplaced) == ["web@1.service"]


def test_over_the_limit_only_the_excess_moves() -> None:
    m1, m2 = MACHINES[0].id, MACHINES[1].id
    jobs = jobs_of(*(job(f"web@{i}.service", "MaxPerMachine=2") for i in range(3)))
    before = {f"web@{i}.service": m1 for i in range(3)}
    after = applied(plan_engine(jobs, MACHINES[:2], before), before)
    assert Counter(after.values()) == {m1: 2, m2: 1}


def test_global_units_of_the_group_count() -> None:
    jobs = jobs_of(
        job("web@g.service", "Global=true"),
        *(job(f"web@{i}.service", "MaxPerMachine=2") for i in range(4)),
    )
    plan = plan_engine(jobs, MACHINES[:2], {})
    assert len(applied(plan, {})) == 2  # one beside the Global instance on each machine


def test_a_global_unit_with_a_limit_runs_only_where_the_group_has_room() -> None:
    candidates = {"mon@a.service": req("Global=true\nMaxPerMachine=1", "mon@a.service")}
    assert globals_on({}, candidates, {"mon@x.service": req("", "mon@x.service")}) == []
    assert globals_on({}, candidates, {"web@x.service": req("", "web@x.service")}) == [
        "mon@a.service"
    ]
