"""The plans of fleetctl stop, unload, destroy and restart: which unit is skipped, refused, set,
destroyed or restarted, what is waited for, what is said.

Every case is plain values: the registered units as the API lists them. The CLI that carries
these plans out runs against a real cluster in tests/cli (and the rolling restart of a Global
unit on real machines in tests/e2e/test_restart.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.reconcile.lifecycle import (
    NOT_FOUND,
    TARGETS,
    DestroyPlan,
    Listed,
    Restart,
    Rolling,
    SetState,
    Step,
    TargetPlan,
    named_units,
    plan_destroy,
    plan_restart,
    plan_rolling_restart,
    plan_target,
)
from fleetd.reconcile.submit import Line

M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
LEGENDS = {M1: "11111111.../10.0.0.1", M2: "22222222.../10.0.0.2", M3: "33333333..."}


def unit(name: str = "hello.service", current: str = "launched", desired: str = "") -> Listed:
    """A non-global unit the engine has in `current` (its desired state alike unless given)."""
    return Listed(name, desired=desired or current or "inactive", current=current)


def glob(name: str = "g.service", desired: str = "launched") -> Listed:
    """A Global unit: no current state of its own (it runs on many machines)."""
    return Listed(name, desired=desired, is_global=True)


def out(*texts: str) -> tuple[Line, ...]:
    return tuple(Line(t) for t in texts)


def err(*texts: str) -> tuple[Line, ...]:
    return tuple(Line(t, stderr=True) for t in texts)


def names(plan: TargetPlan) -> list[str]:
    return [s.name for s in plan.set]


# --- which units the arguments name ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "found"),
    [
        # `hello` means hello.service, a directory part only finds a file
        pytest.param(["hello", "units/a.service"], ["hello.service", "a.service"], id="mangled"),
        # one unit named twice counts once, where first named
        pytest.param(["a", "hello", "hello.service", "a"], ["a.service", "hello.service"],
                     id="once-each-in-order"),
        # a name the registry does not know is skipped, as in fleet
        pytest.param(["nosuch", "hello"], ["hello.service"], id="unknown-skipped"),
        pytest.param(["nosuch"], [], id="none"),
    ],
)  # fmt: skip
def test_named_units(args: list[str], found: list[str]) -> None:
    registered = {n: unit(n) for n in ("hello.service", "a.service", "b.service")}
    assert [u.name for u in named_units(args, registered)] == found


# --- no unit found: fleet's line, and the exit status it chose for each command ---------------


@pytest.mark.parametrize("verb", ["stop", "unload"])
def test_stop_or_unload_of_nothing_says_so_and_succeeds(verb: str) -> None:
    # nothing to stop or unload: the end state holds, so fleet exited 0 after its line
    p = plan_target(verb, [])
    assert p.notes == err(NOT_FOUND)
    assert (p.refusal, p.set, p.done) == ("", (), ())  # nor the "Successfully ..." line


def test_destroy_of_nothing_says_so_and_succeeds() -> None:
    assert plan_destroy([]) == DestroyPlan(notes=err(NOT_FOUND))


def test_restart_of_nothing_fails_with_fleets_line() -> None:
    assert plan_restart([]) == plan_restart([], block=False)
    assert (plan_restart([]).refusal, plan_restart([]).units) == (NOT_FOUND, ())


# --- stop and unload -------------------------------------------------------------------------


def test_the_states_stop_and_unload_bring_units_to_are_fleets() -> None:
    assert TARGETS == {"stop": ("loaded", "stopped"), "unload": ("inactive", "unloaded")}


@pytest.mark.parametrize(
    ("verb", "current", "state"),
    [
        # stop takes a launched unit back to loaded
        pytest.param("stop", "launched", "loaded", id="stop-launched"),
        # unload takes a loaded or launched unit off its machine
        pytest.param("unload", "loaded", "inactive", id="unload-loaded"),
        pytest.param("unload", "launched", "inactive", id="unload-launched"),
        # no current state reported yet: set too
        pytest.param("unload", "", "inactive", id="unload-no-state"),
    ],
)
def test_a_unit_not_in_the_state_yet_is_set_and_waited_for(
    verb: str, current: str, state: str
) -> None:
    p = plan_target(verb, [unit(current=current)])
    assert (p.refusal, p.state, p.set) == ("", state, (SetState("hello.service"),))
    assert (p.units, p.wait, p.triggered) == (("hello.service",), True, ())


@pytest.mark.parametrize(
    ("verb", "current"),
    [
        pytest.param("stop", "loaded", id="stop-loaded"),
        pytest.param("unload", "inactive", id="unload-inactive"),
    ],
)
def test_a_unit_already_in_the_state_is_skipped(verb: str, current: str) -> None:
    p = plan_target(verb, [unit("a.service", current), unit("b.service", "launched")])
    assert names(p) == ["b.service"]  # a is neither set, nor waited for, nor named at the end
    assert p.units == ("b.service",)
    assert p.done == err(f"Successfully {TARGETS[verb][1]} units [b.service].")


def test_all_skipped_still_says_success_naming_no_unit() -> None:
    # fleet printed its line with an empty list: nothing to do is a success
    p = plan_target("stop", [unit(current="loaded")])
    assert (p.set, p.units) == ((), ())
    assert p.done == err("Successfully stopped units [].")


def test_stop_refuses_a_unit_not_loaded_and_sends_nothing() -> None:
    units = [unit("a.service", "launched"), unit("b.service", "inactive"), unit("c.service")]
    p = plan_target("stop", units)
    assert p.refusal == "Unable to stop unit b.service in state inactive"
    assert (p.set, p.units, p.done) == ((), (), ())  # not even a, named before it


@pytest.mark.parametrize("verb", ["stop", "unload"])
@pytest.mark.parametrize("desired", ["inactive", "loaded", "launched"])
def test_global_units_are_set_in_any_state_and_triggered_not_waited_for(
    verb: str, desired: str
) -> None:
    # a Global unit has no current state to skip on or refuse (stop of an inactive one too)
    p = plan_target(verb, [glob(desired=desired), unit(current="launched")])
    assert p.refusal == ""
    assert p.set == (
        SetState("g.service", Line(f"Triggered global unit g.service {verb}")),
        SetState("hello.service"),
    )
    assert p.units == ("hello.service",)
    assert p.done == err(f"Successfully {TARGETS[verb][1]} units [hello.service].")


@pytest.mark.parametrize(
    ("block", "triggered"),
    [
        pytest.param(True, (), id="block"),
        # --no-block: each unit set is said to be triggered; nothing is waited for
        pytest.param(False, out("Triggered unit a.service stop", "Triggered unit b.service stop"),
                     id="no-block"),
    ],
)  # fmt: skip
def test_no_block_says_each_unit_triggered_instead_of_waiting(
    block: bool, triggered: tuple[Line, ...]
) -> None:
    p = plan_target("stop", [unit("a.service"), glob(), unit("b.service")], block=block)
    assert (p.wait, p.triggered) == (block, triggered)
    # the last line is fleet's either way, naming the units set
    assert p.done == err("Successfully stopped units [a.service b.service].")


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        pytest.param(["unit a.service failed on 11111111: systemd reports ..."],
                     "Error waiting for units: unit a.service failed on 11111111: systemd reports ...\n"
                     "Failed to stop units [a.service b.service]. err: unit a.service failed on 11111111: systemd reports ...",
                     id="one"),
        # every unit that did not get there has its line; the summary quotes the first
        pytest.param(["timed out waiting for unit a.service to report state loaded",
                      "timed out waiting for unit b.service to report state loaded"],
                     "Error waiting for units: timed out waiting for unit a.service to report state loaded\n"
                     "Error waiting for units: timed out waiting for unit b.service to report state loaded\n"
                     "Failed to stop units [a.service b.service]. err: timed out waiting for unit a.service to report state loaded",
                     id="two"),
    ],
)  # fmt: skip
def test_a_failed_wait_is_said_in_fleets_words(errors: list[str], message: str) -> None:
    p = plan_target("stop", [unit("a.service"), unit("b.service")])
    assert p.failure(errors) == message


def test_planning_again_once_done_sets_only_the_global_units() -> None:
    units = [unit("a.service"), unit("b.service", "loaded"), glob()]
    first = plan_target("unload", units)
    done = [Listed(u.name, first.state, first.state if u.name in first.units else u.current,
                   u.is_global) for u in units]  # fmt: skip
    again = plan_target("unload", done)
    assert names(again) == ["g.service"]  # it has no state to tell it is there already
    assert again.units == ()


# --- destroy ---------------------------------------------------------------------------------


def test_destroy_takes_every_unit_named_in_any_state() -> None:
    units = [unit("a.service", "inactive"), unit("b.service", "launched"), glob(desired="loaded")]
    p = plan_destroy(units)
    assert (p.notes, p.destroy) == ((), ("a.service", "b.service", "g.service"))


@pytest.mark.parametrize(
    ("errors", "said", "failure"),
    [
        pytest.param([None, None], out("Destroyed a.service", "Destroyed b.service"), "",
                     id="all"),
        # those destroyed are said, then the command fails naming each that was not
        pytest.param(["etcd is away", None], out("Destroyed b.service"),
                     "Error destroying units: etcd is away", id="one-failed"),
        pytest.param(["x", "y"], (), "Error destroying units: x\nError destroying units: y",
                     id="all-failed"),
    ],
)  # fmt: skip
def test_what_destroy_says_once_answered(
    errors: list[str | None], said: tuple[Line, ...], failure: str
) -> None:
    p = plan_destroy([unit("a.service"), unit("b.service")])
    assert p.report(errors) == (said, failure)


# --- restart ---------------------------------------------------------------------------------


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


# --- properties over any registry ------------------------------------------------------------

STATES = st.sampled_from(["", "inactive", "loaded", "launched"])
LISTED = st.builds(
    Listed,
    name=st.sampled_from([f"u{i}.service" for i in range(6)]),
    desired=st.sampled_from(["inactive", "loaded", "launched"]),
    current=STATES,
    is_global=st.booleans(),
)
UNIQUE = st.lists(LISTED, max_size=6, unique_by=lambda u: u.name)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["stop", "unload"]), UNIQUE, st.booleans())
def test_stop_and_unload_set_only_what_is_not_there_and_wait_only_for_what_they_set(
    verb: str, units: list[Listed], block: bool
) -> None:
    p = plan_target(verb, units, block=block)
    by_name = {u.name: u for u in units}
    if p.refusal or not units:
        assert (p.set, p.units, p.done) == ((), (), ())  # nothing sent, nothing said after
        return
    for change in p.set:
        unit = by_name[change.name]
        assert unit.is_global or unit.current != p.state
        assert (change.triggered is not None) is unit.is_global
    assert set(p.units) == {s.name for s in p.set if not by_name[s.name].is_global}
    assert [s.name for s in p.set] == [u.name for u in units if u.name in {s.name for s in p.set}]
    assert p.wait is block and len(p.triggered) == (0 if block else len(p.units))


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
