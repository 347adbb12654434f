"""The plans of fleetctl stop, unload and destroy: which unit is skipped, refused, set or
destroyed, what is waited for, what is said (restart's: test_restart_plan.py).

Every case is plain values: the registered units as the API lists them. The CLI that carries
these plans out runs against a real cluster in tests/cli.
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
    SetState,
    TargetPlan,
    named_units,
    plan_destroy,
    plan_target,
)
from fleetd.reconcile.submit import Line


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


def test_a_pending_unit_is_unloaded_without_waiting() -> None:
    # desired launched, no machine: the engine has it inactive; fleet skipped it for good
    pending = unit("a.service", "inactive", desired="launched")
    p = plan_target("unload", [pending, unit("b.service", "launched")])
    assert names(p) == ["a.service", "b.service"]
    assert p.units == ("b.service",)  # only b has a machine to leave
    assert p.done == err("Successfully unloaded units [a.service b.service].")
    # and stop still refuses it, as fleet does
    assert (
        plan_target("stop", [pending]).refusal == "Unable to stop unit a.service in state inactive"
    )


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
        # set: not in the state yet, or in it but wanted elsewhere (a unit waiting for a machine)
        assert unit.is_global or unit.current != p.state or unit.desired != p.state
        assert (change.triggered is not None) is unit.is_global
    assert set(p.units) == {
        s.name
        for s in p.set
        if not by_name[s.name].is_global and by_name[s.name].current != p.state
    }
    assert [s.name for s in p.set] == [u.name for u in units if u.name in {s.name for s in p.set}]
    local = [s for s in p.set if not by_name[s.name].is_global]
    assert p.wait is block and len(p.triggered) == (0 if block else len(local))
