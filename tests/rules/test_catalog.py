"""The catalog as a whole: every rule's options are known, a refused value never breaks a
reader (it refuses every machine, with the reason), and the rules are asked in fleet's order."""

from __future__ import annotations

import pytest

from fleetd.reconcile.engine import plan_engine
from fleetd.reconcile.globals import globals_on
from fleetd.reconcile.scheduler import MachineSpec
from fleetd.rules import RULES, Invalid, UnitValidationError
from tests.rules.helpers import job, jobs_of, req

MACHINE = MachineSpec("1" * 32, {"cores": "16"})


def test_every_rule_has_a_unique_name_and_options() -> None:
    names = [rule.name for rule in RULES]
    options = [option for rule in RULES for option in rule.options]
    assert len(set(names)) == len(names)
    assert len(set(options)) == len(options)
    # the modern name first (a rule of two options, Reservation, is named after neither; the
    # update policy's options all begin with its name)
    assert all(
        rule.options[0] == rule.name
        or len(rule.options) == 2
        or all(o.startswith(rule.name) for o in rule.options)
        for rule in RULES
    )


def test_no_known_option_is_reported_unknown() -> None:
    lines = "\n".join(f"{option}=x" for rule in RULES for option in rule.options)
    assert req(lines).unknown == ()


def test_a_refused_value_is_an_invalid_term_asked_first() -> None:
    r = req("Conflicts=a*\nMachineMetadata=cores>=many")
    assert isinstance(r.terms[0], Invalid)
    with pytest.raises(UnitValidationError, match="'many' is not a number"):
        r.validate()


def test_a_stored_unit_with_a_refused_value_waits_with_the_reason() -> None:
    plan = plan_engine(jobs_of(job("a.service", "MachineMetadata=cores>=many")), [MACHINE], {})
    assert plan.tasks == ()
    assert plan.unplaced["a.service"].startswith(
        "its [X-Fleet] section is invalid: MachineMetadata cores>=many"
    )
    # placed before: it is moved off, not kept
    moved = plan_engine(
        jobs_of(job("a.service", "MachineMetadata=cores>=many")),
        [MACHINE],
        {"a.service": MACHINE.id},
    )
    assert [t.action.value for t in moved.tasks] == ["unschedule"]


def test_a_global_unit_with_a_refused_value_runs_nowhere() -> None:
    assert globals_on({}, {"g.service": req("Global=true\nMaxPerMachine=0", "g.service")}) == []


@pytest.mark.parametrize(
    ("lines", "first"),
    [
        # fleet's order: MachineOf's unresolvable peers before MachineID's combinations
        ("MachineID=a\nMachineOf=db.service\nConflicts=d*.service",
         'unresolvable requirements: peer "db.service" matches conflict "d*.service"'),
        ("MachineID=a\nGlobal=true\nMachineOf=b.service", "MachineID cannot be used with Peers"),
        ("Global=true\nMachineOf=b.service\nReplaces=c", "Global cannot be used with Peers"),
        ("Global=true\nSpread=rack", "Spread cannot be used with Global"),
    ],
)  # fmt: skip
def test_validation_reports_the_first_problem_in_fleets_order(lines: str, first: str) -> None:
    with pytest.raises(UnitValidationError) as err:
        req(lines).validate()
    assert str(err.value) == first
