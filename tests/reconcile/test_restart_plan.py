"""The plan of fleetctl restart: a non-global unit through its desired states, a Global unit
machine by machine (its rolling restart), or fleet's refusal; what is waited for and said.

Plain values, as tests/reconcile/test_lifecycle.py (whose helpers these cases share); the
rolling restart on real machines: tests/e2e/test_restart.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.reconcile.lifecycle import (
    NOT_FOUND,
    Listed,
    Restart,
    Rolling,
    Step,
    plan_restart,
    plan_rolling_restart,
    plan_target,
)
from fleetd.reconcile.submit import Line
from tests.reconcile.test_lifecycle import UNIQUE, glob, out, unit

M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
LEGENDS = {M1: "11111111.../10.0.0.1", M2: "22222222.../10.0.0.2", M3: "33333333..."}


# --- a unit's restart -----------------------------------------------------------------------


def test_restart_of_nothing_fails_with_fleets_line() -> None:
    assert plan_restart([]) == plan_restart([], block=False)
    assert (plan_restart([]).refusal, plan_restart([]).units) == (NOT_FOUND, ())


@pytest.mark.parametrize(
    ("current", "states"),
    [
        # stopped and started again through its desired state, each step waited for
        pytest.param("launched", ("loaded", "launched"), id="launched"),
        pytest.param("", ("loaded", "launched"), id="no-state-yet"),
        # a loaded unit is not running: it is only started
        pytest.param("loaded", ("launched",), id="loaded"),
    ],
)
def test_a_unit_is_restarted_through_its_desired_states(current: str, states: tuple) -> None:
    (restart,) = plan_restart([unit(current=current)]).units
    assert (restart.problem, restart.rolling) == ("", False)
    assert tuple(s.state for s in restart.steps) == states


def test_only_launched_is_waited_for_as_active() -> None:
    # back to loaded: the unit state is enough; launched: systemd must say active (and settle)
    (restart,) = plan_restart([unit()]).units
    assert restart.steps == (Step("loaded"), Step("launched", active=True))


def test_restart_no_block_says_each_step_triggered() -> None:
    (restart,) = plan_restart([unit()], block=False).units
    said = Line("Triggered unit hello.service restart")
    assert restart.steps == (Step("loaded", triggered=said), Step("launched", True, said))


@pytest.mark.parametrize(
    ("listed", "restart"),
    [
        # not even loaded: nothing runs to restart
        pytest.param(unit(current="inactive"),
                     Restart("hello.service", problem="Unable to restart unit hello.service in state inactive"),
                     id="inactive"),
        # a Global unit meant to run is restarted on its machines, one by one
        pytest.param(glob(), Restart("g.service", rolling=True), id="global-launched"),
        # one that is not meant to run is refused in its desired state
        pytest.param(glob(desired="loaded"),
                     Restart("g.service", problem="Unable to restart unit g.service in state loaded"),
                     id="global-loaded"),
        pytest.param(glob(desired="inactive"),
                     Restart("g.service", problem="Unable to restart unit g.service in state inactive"),
                     id="global-inactive"),
    ],
)  # fmt: skip
def test_what_restart_does_with_a_unit_by_its_kind_and_state(
    listed: Listed, restart: Restart
) -> None:
    assert plan_restart([listed]).units == (restart,)


def test_restart_goes_unit_by_unit_in_the_order_named_problems_in_place() -> None:
    # the problems are reported once every unit had its turn, in the units' order
    units = [
        unit("a.service"),
        glob(desired="loaded"),
        unit("b.service", "inactive"),
        glob("h.service"),
    ]
    p = plan_restart(units)
    assert p.refusal == ""
    assert [(r.name, bool(r.steps), r.rolling, bool(r.problem)) for r in p.units] == [
        ("a.service", True, False, False),
        ("g.service", False, False, True),
        ("b.service", False, False, True),
        ("h.service", False, True, False),
    ]


# --- the rolling restart of a Global unit ----------------------------------------------------


def test_a_global_unit_is_restarted_machine_by_machine_in_id_order() -> None:
    # the machines are those reporting a state of it, each once (list-units' rows)
    rolling = plan_rolling_restart("g.service", [M3, M1, M2, M1])
    assert rolling == Rolling("g.service", (M1, M2, M3))
    assert rolling.wait and rolling.triggered == ()


@pytest.mark.parametrize("block", [True, False])
def test_a_global_unit_no_machine_runs_cannot_be_restarted(block: bool) -> None:
    rolling = plan_rolling_restart("g.service", [], block=block)
    assert rolling.problem == "Unable to restart global unit g.service: no machine runs it"
    assert (rolling.machines, rolling.triggered) == ((), ())  # nothing is asked, nothing said


def test_no_block_asks_every_machine_at_once_with_fleets_one_line() -> None:
    rolling = plan_rolling_restart("g.service", [M2, M1], block=False)
    assert (rolling.machines, rolling.wait) == ((M1, M2), False)
    assert rolling.triggered == out("Triggered global unit g.service restart")


def test_each_machine_done_is_said_with_its_legend() -> None:
    rolling = plan_rolling_restart("g.service", [M1])
    assert rolling.restarted(LEGENDS[M1]) == Line(
        "Unit g.service restarted on 11111111.../10.0.0.1"
    )


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        # the machines after the first failure are left alone, and named
        pytest.param(M1, "Error restarting unit g.service on 11111111.../10.0.0.1: failed\n"
                         "Unit g.service was not restarted on 22222222.../10.0.0.2 33333333... "
                         "(stopped at the first failure)", id="first"),
        pytest.param(M2, "Error restarting unit g.service on 22222222.../10.0.0.2: failed\n"
                         "Unit g.service was not restarted on 33333333... "
                         "(stopped at the first failure)", id="middle"),
        # on the last machine there is nothing left out to name
        pytest.param(M3, "Error restarting unit g.service on 33333333...: failed", id="last"),
    ],
)  # fmt: skip
def test_a_rolling_restart_stops_at_the_first_failure(machine: str, message: str) -> None:
    rolling = plan_rolling_restart("g.service", [M1, M2, M3])
    assert rolling.stopped_at(machine, "failed", LEGENDS) == message


@pytest.mark.parametrize(
    ("refused", "message"),
    [
        pytest.param({}, "", id="all-asked"),
        # each machine the API refused is named by its whole ID, in machine order
        pytest.param({M3: "gone", M1: "no"},
                     f"Error restarting unit g.service on {M1}: no\n"
                     f"Error restarting unit g.service on {M3}: gone", id="two-refused"),
    ],
)  # fmt: skip
def test_no_block_names_each_machine_not_asked(refused: dict[str, str], message: str) -> None:
    rolling = plan_rolling_restart("g.service", [M1, M2, M3], block=False)
    assert rolling.unasked(refused) == message


def test_the_same_input_gives_the_same_plans() -> None:
    units = [unit("a.service"), glob(), unit("b.service", "loaded")]
    assert plan_restart(units) == plan_restart(list(units))
    assert plan_target("stop", units, block=False) == plan_target("stop", list(units), block=False)
    assert plan_rolling_restart("g", [M2, M1]) == plan_rolling_restart("g", (M1, M2))


@settings(max_examples=300, deadline=None)
@given(UNIQUE, st.booleans())
def test_restart_gives_every_unit_one_turn_in_order_ending_launched(
    units: list[Listed], block: bool
) -> None:
    p = plan_restart(units, block=block)
    assert [r.name for r in p.units] == [u.name for u in units]
    for restart in p.units:
        # exactly one of: steps, rolling, a problem
        assert sum((bool(restart.steps), restart.rolling, bool(restart.problem))) == 1
        if restart.steps:  # a non-global unit is always left launched, each step said or waited
            assert restart.steps[-1] == Step("launched", True, restart.steps[-1].triggered)
            assert all((s.triggered is None) is block for s in restart.steps)
