"""systemd's ActiveStates, each group written once: what runs, what fleet calls launched, what an
agent adopts as started — and every layer judging by the same group."""

from __future__ import annotations

import pytest

from fleetd.model import Job, JobState, UnitContent, UnitState
from fleetd.reconcile.agent import ActualUnit, DesiredUnit, Kind, plan_agent
from fleetd.reconcile.states import (
    LAUNCHED_STATES,
    RUNNING_STATES,
    STARTED_STATES,
    adopted_as_started,
)
from fleetd.reconcile.waiting import current_state
from fleetd.registry import Snapshot
from fleetd.unit import parse_unit

ME = "1" * 32
H1, H2 = "a" * 40, "b" * 40

# every ActiveState systemd has (`systemctl --state=help`), and what each group says of it
#           (state,          running, launched, adopted as started)
ACTIVE = [
    ("active", True, True, True),
    ("reloading", True, True, True),
    ("activating", True, True, True),
    ("failed", False, True, True),  # ran and failed: not started again
    ("deactivating", False, False, True),  # being stopped: it was started
    ("inactive", False, False, False),
    ("maintenance", False, False, False),  # systemd 250's clean-up of a unit: not running
    ("refreshing", False, False, False),
]
IDS = [a[0] for a in ACTIVE]


@pytest.mark.parametrize(("active", "running", "launched", "adopted"), ACTIVE, ids=IDS)
def test_adopted_as_started(active, running, launched, adopted) -> None:
    assert adopted_as_started(active) is adopted


@pytest.mark.parametrize(("active", "running", "launched", "adopted"), ACTIVE, ids=IDS)
def test_a_unit_no_longer_placed_here_is_stopped_only_while_running(
    active, running, launched, adopted
) -> None:
    tasks = plan_agent({}, {"a.service": ActualUnit("a.service", H1, active)})
    assert [t.kind for t in tasks] == ([Kind.STOP] if running else []) + [Kind.UNLINK]


@pytest.mark.parametrize(("active", "running", "launched", "adopted"), ACTIVE, ids=IDS)
def test_a_replaced_content_is_stopped_first_only_while_running(
    active, running, launched, adopted
) -> None:
    tasks = plan_agent(
        {"a.service": DesiredUnit("a.service", H2, False)},
        {"a.service": ActualUnit("a.service", H1, active)},
    )
    assert [t.kind for t in tasks] == ([Kind.STOP] if running else []) + [Kind.WRITE]


@pytest.mark.parametrize(("active", "running", "launched", "adopted"), ACTIVE, ids=IDS)
def test_fleets_current_state_is_launched_in_the_launched_states(
    active, running, launched, adopted
) -> None:
    unit = parse_unit("[Service]\nExecStart=/bin/true\n")
    job = Job("a.service", unit.hash, JobState.LAUNCHED)
    view = Snapshot(
        1,
        jobs={job.name: job},
        units={unit.hash: UnitContent(unit)},
        placements={job.name: ME},
        states={(job.name, ME): UnitState(job.name, ME, unit.hash, "loaded", active, "x")},
    )
    assert current_state(view, job) == ("launched" if launched else "loaded")


def test_the_groups_nest() -> None:
    # what runs was launched; what was launched (or is being stopped) was started
    assert RUNNING_STATES < LAUNCHED_STATES < STARTED_STATES
    assert {a for a, *_ in ACTIVE if a in STARTED_STATES} == STARTED_STATES
