"""Which machine answers for a unit's status and journal, and whose state `/state/{name}`
shows, or fleetctl's words for why none."""

from __future__ import annotations

import pytest

from fleetd.model import Job, JobState, UnitContent, UnitState
from fleetd.reconcile.inspection import journal_machine, shown_state, status_machines
from fleetd.reconcile.refuse import Refuse
from fleetd.registry import Snapshot
from fleetd.unit import parse_unit

M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
HELLO = parse_unit("[Service]\nExecStart=/bin/sh -c 'while true; do echo Hello; sleep 1; done'\n")
GLOBAL = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n")


def view(
    unit=HELLO, *, placed: str | None = None, reporting: tuple[str, ...] = (), active="active"
) -> Snapshot:
    """The unit `u.service` with `unit`'s content, placed on `placed`, its state published by
    the machines `reporting`."""
    job = Job("u.service", unit.hash, JobState.LAUNCHED)
    return Snapshot(
        revision=1,
        jobs={job.name: job},
        units={unit.hash: UnitContent(unit)},
        placements={job.name: placed} if placed else {},
        states={
            (job.name, m): UnitState(job.name, m, unit.hash, "loaded", active, "running")
            for m in reporting
        },
    )


@pytest.mark.parametrize(
    "ask",
    [
        pytest.param(lambda v: status_machines(v, "nope.service"), id="status"),
        pytest.param(lambda v: journal_machine(v, "nope.service", None), id="journal"),
        # a machine named changes nothing: there is no such unit anywhere
        pytest.param(lambda v: journal_machine(v, "nope.service", M1), id="journal-machine"),
    ],
)
def test_a_unit_that_does_not_exist_has_no_machine(ask) -> None:
    assert ask(view(placed=M1, reporting=(M1,))) == Refuse(404, "Unit nope.service does not exist.")


@pytest.mark.parametrize(
    ("snapshot", "machine"),
    [
        # launched on its machine
        pytest.param(view(placed=M2, reporting=(M2,)), M2, id="launched"),
        # loaded and not started: systemd still has it, its status and journal say why
        pytest.param(view(placed=M2, reporting=(M2,), active="inactive"), M2, id="loaded"),
        # a stale state of a machine it left does not count: only the placed machine
        pytest.param(view(placed=M2, reporting=(M1, M2)), M2, id="stale-state-elsewhere"),
    ],
)
def test_a_placed_unit_is_answered_by_its_machine(snapshot: Snapshot, machine: str) -> None:
    assert status_machines(snapshot, "u.service") == [machine]
    assert journal_machine(snapshot, "u.service", None) == machine


@pytest.mark.parametrize(
    "snapshot",
    [
        # no machine yet
        pytest.param(view(), id="unplaced"),
        # placed, but its machine has not published a state: fleet calls it inactive
        pytest.param(view(placed=M1), id="no-state-yet"),
        # a state published by another machine than the placed one
        pytest.param(view(placed=M1, reporting=(M2,)), id="state-elsewhere"),
    ],
)
def test_a_unit_fleet_calls_inactive_is_answered_nowhere(snapshot: Snapshot) -> None:
    assert status_machines(snapshot, "u.service") == Refuse(
        409, "Unit u.service does not appear to be loaded."
    )
    assert journal_machine(snapshot, "u.service", None) == Refuse(
        409, "Unit u.service does not appear to be running."
    )


def test_a_machine_named_for_a_placed_unit_is_ignored() -> None:
    # only a global unit runs on more than one machine: the placed one answers
    assert journal_machine(view(placed=M1, reporting=(M1,)), "u.service", M2) == M1


@pytest.mark.parametrize(
    ("reporting", "expected"),
    [
        # every machine that reports it, in machine ID order
        pytest.param((M3, M1), [M1, M3], id="two"),
        # failed on one: systemd has it all the same, its status says why
        pytest.param((M2,), [M2], id="one"),
        # no machine reports it (yet): nothing to show
        pytest.param((), Refuse(409, "Unit u.service does not appear to be loaded."), id="none"),
    ],
)
def test_the_status_of_a_global_unit_is_every_machines(
    reporting: tuple[str, ...], expected: object
) -> None:
    assert status_machines(view(GLOBAL, reporting=reporting), "u.service") == expected


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        # it runs on several machines: one must be named, the candidates are listed
        pytest.param(None, Refuse(400, f"Unable to retrieve journal of global unit u.service: name a machine with ?machineID= (one of {M1}, {M3})."), id="none-named"),
        pytest.param("", Refuse(400, f"Unable to retrieve journal of global unit u.service: name a machine with ?machineID= (one of {M1}, {M3})."), id="empty"),
        pytest.param(M3, M3, id="named"),
        # a machine that does not report it: fleetctl's words for it
        pytest.param(M2, Refuse(409, f"Unit u.service does not appear to be running on {M2}."), id="not-there"),
    ],
)  # fmt: skip
def test_the_journal_of_a_global_unit_is_one_named_machines(
    wanted: str | None, expected: object
) -> None:
    assert journal_machine(view(GLOBAL, reporting=(M1, M3)), "u.service", wanted) == expected


def test_a_global_unit_no_machine_reports_has_no_journal() -> None:
    assert journal_machine(view(GLOBAL), "u.service", M1) == Refuse(
        409, "Unit u.service does not appear to be running."
    )


@pytest.mark.parametrize(
    ("snapshot", "machine"),
    [
        # its machine's state, even when a stale one of a lower machine ID is still there
        pytest.param(view(placed=M2, reporting=(M1, M2, M3)), M2, id="placed"),
        # placed, its machine not reporting yet: the state of the lowest machine ID that does
        pytest.param(view(placed=M2, reporting=(M3, M1)), M1, id="placed-not-reported"),
        pytest.param(view(reporting=(M3,)), M3, id="unplaced-one-state"),
        # a global unit: every machine's state is as good, the first by ID is shown
        pytest.param(view(GLOBAL, reporting=(M3, M2)), M2, id="global"),
    ],
)
def test_the_state_shown_is_the_placed_machines_else_the_first(
    snapshot: Snapshot, machine: str
) -> None:
    shown = shown_state(snapshot, "u.service")
    assert isinstance(shown, UnitState) and shown.machine_id == machine


@pytest.mark.parametrize(
    "snapshot",
    [
        pytest.param(view(placed=M1), id="placed-no-state"),
        pytest.param(view(GLOBAL), id="global-no-state"),
    ],
)
def test_a_unit_no_machine_reports_has_no_state(snapshot: Snapshot) -> None:
    # fleet's words: the unit itself may well exist
    assert shown_state(snapshot, "u.service") == Refuse(404, "unit state does not exist")
    assert shown_state(snapshot, "nope.service") == Refuse(404, "unit state does not exist")
