"""Where a `POST x/wait` stands: its request, the units it still waits for, the settling of a
service that may die right after it started, the units the planner is asked about, the last
line — judged on views built by hand, with the time handed in."""

from __future__ import annotations

import pytest

from fleetd.model import Job, JobState, Machine, Placement, UnitContent, UnitState
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.wait_progress import WaitAsk, WaitProgress, read_wait
from fleetd.registry import Changed, ClusterView, KeyKind, Removed, Update
from fleetd.unit import UnitFile, parse_unit

M1 = "1" * 32
HELLO = parse_unit("[Service]\nExecStart=/bin/sh -c 'while true; do echo Hello; sleep 1; done'\n")
ONESHOT = parse_unit("[Service]\nType=oneshot\nExecStart=/bin/true\nRemainAfterExit=yes\n")
GLOBAL = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n")
LAUNCHED = WaitAsk(("a.service",), JobState.LAUNCHED, active=True, settle=2.0)


def cluster() -> ClusterView:
    view = ClusterView()
    view.put_doc(Machine(M1, "10.0.0.1"))
    return view


def unit(
    view: ClusterView,
    name: str = "a.service",
    content: UnitFile = HELLO,
    *,
    desired: JobState = JobState.LAUNCHED,
    placed: bool = True,
    active: str | None = None,
) -> ClusterView:
    """`view` with the unit `name` (placed on M1 if `placed`; systemd on M1 reporting `active`,
    None: no state yet)."""
    view.put_doc(UnitContent(content))
    view.put_doc(Job(name, content.hash, desired))
    if placed:
        view.put_doc(Placement(name, M1))
    if active is not None:
        sub = {"active": "running", "failed": "failed", "activating": "start"}.get(active, "dead")
        view.put_doc(UnitState(name, M1, content.hash, "loaded", active, sub))
    return view


def line(name: str = "a.service", current: str = "launched") -> dict[str, object]:
    return {"name": name, "currentState": current, "machineID": M1, "machineIP": "10.0.0.1"}


# --- the request -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(["a.service"], "unable to decode body: expected a JSON object", id="array"),
        pytest.param({"state": "launched"}, "units must be a non-empty list of unit names", id="no-units"),
        pytest.param({"units": [], "state": "launched"}, "units must be a non-empty list of unit names", id="empty"),
        pytest.param({"units": "a.service", "state": "launched"}, "units must be a non-empty list of unit names", id="one-string"),
        pytest.param({"units": ["a.service", 7], "state": "launched"}, "units must be a non-empty list of unit names", id="number"),
        # fleet's three states only: systemd's words are not states a unit is waited into
        pytest.param({"units": ["a.service"], "state": "running"}, "invalid state 'running': expected inactive, loaded or launched", id="systemd-word"),
        pytest.param({"units": ["a.service"]}, "invalid state None: expected inactive, loaded or launched", id="no-state"),
        pytest.param({"units": ["a.service"], "state": "launched", "active": "yes"}, "active must be true or false", id="active-string"),
        pytest.param({"units": ["a.service"], "state": "launched", "timeout": -1}, "timeout must be a non-negative number of seconds or null", id="timeout-negative"),
        pytest.param({"units": ["a.service"], "state": "launched", "settle": True}, "settle must be a number of seconds between 0 and 600", id="settle-bool"),
        pytest.param({"units": ["a.service"], "state": "launched", "settle": 601}, "settle must be a number of seconds between 0 and 600", id="settle-too-long"),
        pytest.param({"units": ["a.service"], "state": "launched", "settle": "2"}, "settle must be a number of seconds between 0 and 600", id="settle-string"),
    ],
)  # fmt: skip
def test_a_bad_wait_is_refused(body: object, message: str) -> None:
    assert read_wait(body) == Refuse(400, message)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"units": ["a.service"], "state": "loaded"}, WaitAsk(("a.service",), JobState.LOADED), id="defaults"),
        # a unit named twice is waited for once, in the order first named
        pytest.param({"units": ["b.service", "a.service", "b.service"], "state": "inactive"}, WaitAsk(("b.service", "a.service"), JobState.INACTIVE), id="each-once"),
        pytest.param({"units": ["a.service"], "state": "launched", "active": True, "timeout": 30, "settle": 2}, WaitAsk(("a.service",), JobState.LAUNCHED, True, 30, 2.0), id="all-fields"),
    ],
)  # fmt: skip
def test_a_good_wait_names_each_unit_once(body: object, expected: WaitAsk) -> None:
    assert read_wait(body) == expected


# --- judging ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param({"active": "active"}, line(), id="reached"),
        # not started yet, or on its way: no line, still pending
        pytest.param({}, None, id="no-state-yet"),
        pytest.param({"placed": False}, None, id="unplaced"),
        pytest.param({"active": "activating"}, None, id="activating"),
        # failed: the failure's line at once, in systemd's words
        pytest.param({"active": "failed"}, {
            **line(current="failed"), "failed": True, "load": "loaded", "active": "failed",
            "sub": "failed", "reason": "systemd reports ActiveState=failed SubState=failed",
        }, id="failed"),
    ],
)  # fmt: skip
def test_a_unit_is_judged_reached_failed_or_pending(now: dict[str, object], expected) -> None:
    progress = WaitProgress(cluster(), WaitAsk(("a.service",), JobState.LAUNCHED, active=True))
    unit(progress.view, **now)  # what the follower folded in since the wait began
    assert progress.judge(None, now=0.0) == ([expected] if expected else [])
    assert list(progress.pending) == ([] if expected else ["a.service"])


def test_only_pending_candidates_are_judged() -> None:
    view = unit(unit(cluster(), "a.service"), "b.service", active="active")
    progress = WaitProgress(view, WaitAsk(("a.service", "b.service"), JobState.LAUNCHED))
    # b reached the state, but the step concerned a (and a unit not waited for) only
    assert progress.judge(["a.service", "c.service"], now=0.0) == []
    # None: every pending unit, as at the start and after a resync
    assert progress.judge(None, now=0.0) == [line("b.service")]
    assert progress.judge(["b.service"], now=0.0) == []  # told once
    assert list(progress.pending) == ["a.service"]


def test_a_simple_service_is_watched_settle_seconds_before_it_counts() -> None:
    progress = WaitProgress(unit(cluster(), active="activating"), LAUNCHED)
    unit(progress.view, active="active")  # it turned active at t=10
    assert progress.judge(["a.service"], now=10.0) == []
    assert progress.next_deadline() == 12.0
    assert progress.due(11.9) == []
    # its moment is over: judged again, it counts (the handler wakes at the deadline)
    assert progress.due(12.0) == ["a.service"]
    assert progress.judge(progress.due(12.0), now=12.0) == [line()]
    assert progress.next_deadline() is None and not progress.pending


@pytest.mark.parametrize(
    ("after", "expected", "deadline"),
    [
        # it died within its moment: the failure's line, no settling left
        pytest.param("failed", "failed", None, id="died"),
        # Restart= brought it back to activating: the moment starts again once it is active
        pytest.param("activating", None, None, id="restarting"),
        # still active, moment not over: still settling
        pytest.param("active", None, 12.0, id="still-settling"),
    ],
)
def test_a_settling_service_that_leaves_active_starts_over_or_fails(
    after: str, expected: str | None, deadline: float | None
) -> None:
    progress = WaitProgress(unit(cluster(), active="activating"), LAUNCHED)
    unit(progress.view, active="active")
    progress.judge(None, now=10.0)
    unit(progress.view, active=after)
    lines = progress.judge(None, now=11.0)
    assert [x["currentState"] for x in lines] == ([expected] if expected else [])
    assert progress.next_deadline() == deadline


@pytest.mark.parametrize(
    ("ask", "before", "after"),
    [
        # active before the wait began: nothing is starting, nothing to settle
        pytest.param(LAUNCHED, {"active": "active"}, {"active": "active"}, id="active-before"),
        pytest.param(WaitAsk(("a.service",), JobState.LAUNCHED, active=True), {}, {"active": "active"}, id="no-settle-asked"),
        # not asked to be systemd-active: launched is enough
        pytest.param(WaitAsk(("a.service",), JobState.LAUNCHED, settle=2.0), {}, {"active": "active"}, id="not-active"),
        # a oneshot is active only once it finished: nothing can die right after
        pytest.param(LAUNCHED, {"content": ONESHOT}, {"content": ONESHOT, "active": "active"}, id="oneshot"),
    ],
)  # fmt: skip
def test_what_counts_at_once(
    ask: WaitAsk, before: dict[str, object], after: dict[str, object]
) -> None:
    progress = WaitProgress(unit(cluster(), **before), ask)
    unit(progress.view, **after)
    assert progress.judge(None, now=10.0) == [line()]


def test_a_global_unit_is_never_waited_for() -> None:
    view = unit(cluster(), content=GLOBAL, placed=False)
    assert WaitProgress(view, LAUNCHED).judge(None, now=0.0) == [
        {"name": "a.service", "global": True}
    ]


# --- units without a machine -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("view", "state", "expected"),
    [
        pytest.param(unit(cluster(), placed=False), JobState.LAUNCHED, {"a.service"}, id="unplaced"),
        pytest.param(unit(cluster(), placed=True), JobState.LAUNCHED, set(), id="placed"),
        # it wants no machine: the engine will not place it, and that is not a failure
        pytest.param(unit(cluster(), placed=False, desired=JobState.INACTIVE), JobState.LOADED, set(), id="desired-inactive"),
        # waiting for inactive needs no machine at all
        pytest.param(unit(cluster(), placed=False), JobState.INACTIVE, set(), id="waiting-for-inactive"),
        pytest.param(cluster(), JobState.LAUNCHED, set(), id="no-such-unit"),
    ],
)  # fmt: skip
def test_the_planner_is_asked_about_pending_units_without_a_machine(
    view: ClusterView, state: JobState, expected: set[str]
) -> None:
    assert WaitProgress(view, WaitAsk(("a.service",), state)).unplaced() == expected


def test_units_placed_nowhere_end_in_name_order_and_a_placed_one_waits_on() -> None:
    view = unit(unit(unit(cluster(), "c.service", placed=False), "b.service", placed=False),
                "a.service", placed=True)  # fmt: skip
    ask = WaitAsk(("c.service", "b.service", "a.service"), JobState.LAUNCHED)
    progress = WaitProgress(view, ask)
    reasons = {n: "no machine matches MachineMetadata role=db" for n in ask.units}
    assert progress.unschedulable(reasons) == [
        {"name": n, "currentState": "inactive", "failed": True, "unschedulable": True,
         "reason": "cannot be scheduled: no machine matches MachineMetadata role=db"}
        for n in ("b.service", "c.service")
    ]  # fmt: skip
    assert list(progress.pending) == ["a.service"]
    assert progress.unschedulable(reasons) == []  # told once


JOB_OF_A = Changed(5, KeyKind.JOB, "a.service", Job("a.service", HELLO.hash, JobState.LAUNCHED))


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        pytest.param(Update(cluster(), (), everything=True), True, id="start-or-resync"),
        # a machine came, went or changed metadata: somewhere new to go, or nowhere left
        pytest.param(Update(cluster(), (Removed(5, KeyKind.MACHINE, M1),), machines=True), True, id="machines"),
        # a pending unit's job changed: its content, and so its [X-Fleet] rules, may be new
        pytest.param(Update(cluster(), (JOB_OF_A,), units=frozenset({"a.service"})), True, id="pending-job"),
        pytest.param(Update(cluster(), (Changed(5, KeyKind.JOB, "z.service", Job("z.service", HELLO.hash, JobState.LAUNCHED)),), units=frozenset({"z.service"})), False, id="other-job"),
        # systemd's word on a unit moves no unit anywhere
        pytest.param(Update(cluster(), (Changed(5, KeyKind.STATE, ("a.service", M1), UnitState("a.service", M1, HELLO.hash, "loaded", "active", "running")),), units=frozenset({"a.service"})), False, id="state"),
    ],
)  # fmt: skip
def test_the_planner_is_asked_again_only_when_placement_may_change(
    update: Update, expected: bool
) -> None:
    progress = WaitProgress(
        unit(cluster(), placed=False), WaitAsk(("a.service",), JobState.LAUNCHED)
    )
    assert progress.placement_may_change(update) is expected


# --- the last line ---------------------------------------------------------------------------
def test_the_last_line_says_why_each_unit_is_still_pending() -> None:
    view = unit(unit(unit(cluster(), "c.service"), "b.service", placed=False),
                "a.service", active="activating")  # fmt: skip
    ask = WaitAsk(("d.service", "a.service", "b.service", "c.service"), JobState.LAUNCHED, True)
    progress = WaitProgress(view, ask)
    assert progress.final(lambda: {"b.service": "no machine has enough memory"}) == {
        "done": True,
        "pending": [
            {"name": "d.service", "currentState": None, "reason": "unit does not exist"},
            {"name": "a.service", "currentState": "launched",
             "reason": f"systemd on machine {M1} reports loaded/activating/start"},
            {"name": "b.service", "currentState": "inactive",
             "reason": "no machine has enough memory"},
            {"name": "c.service", "currentState": "inactive",
             "reason": f"waiting for machine {M1} to report the unit"},
        ],
    }  # fmt: skip


def test_the_planner_is_not_asked_when_every_pending_unit_has_a_machine() -> None:
    # the last line's planner run reads the whole registry: only for a unit without a machine
    progress = WaitProgress(unit(cluster()), WaitAsk(("a.service",), JobState.LAUNCHED))
    asked = []
    progress.final(lambda: asked.append(1) or {})
    assert asked == []
