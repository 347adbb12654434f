"""The drain planner as tables: given a cordon document and the cluster, the next document and
the units it releases (fleetd/reconcile/drain.py); and the engine's planner moving exactly the
released units off a cordoned machine. Pure: documents built by hand, no fakes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetd.model import (
    Cordon,
    DrainState,
    Job,
    JobState,
    Machine,
    Phase,
    Target,
    UnitContent,
    UnitState,
)
from fleetd.reconcile.drain import (
    begin_drain,
    drain_over,
    drain_progress,
    plan_drain,
    read_drain,
    read_machine_id,
    released,
    stops_globals,
)
from fleetd.reconcile.engine import Reason, plan_for
from fleetd.reconcile.refuse import Refuse
from fleetd.registry import Snapshot
from fleetd.unit import parse_unit

M = [f"{i}" * 32 for i in range(1, 4)]  # M[0] is the drained machine
WEB = parse_unit(
    "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nDisruptionBudget=MinAvailable=4\n"
)
PLAIN = parse_unit("[Service]\nExecStart=/bin/sleep 1000\n")
GLOBAL = parse_unit("[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nGlobal=true\n")
PINNED = parse_unit(f"[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nMachineID={M[0]}\n")
WEBS = [f"web@{i}.service" for i in range(1, 6)]
NOW = 1000.0


def active(name: str, machine: str, unit_hash: str, **extra: str) -> UnitState:
    return UnitState(name, machine, unit_hash, "loaded", "active", "running", **extra)


def cluster(
    *,
    jobs: dict[str, object],
    placements: dict[str, str],
    states: list[UnitState] | None = None,
    cordons: tuple[Cordon, ...] = (),
    desired: JobState = JobState.LAUNCHED,
) -> Snapshot:
    return Snapshot(
        1,
        jobs={n: Job(n, u.hash, desired) for n, u in jobs.items()},  # type: ignore[attr-defined]
        units={u.hash: UnitContent(u) for u in (WEB, PLAIN, GLOBAL, PINNED)},
        machines={m: Machine(m) for m in M},
        placements=placements,
        states={(s.name, s.machine_id): s for s in states or ()},
        cordons={c.machine_id: c for c in cordons},
    )


def web_cluster(states: list[UnitState] | None = None, **placed: str) -> Snapshot:
    """Five web@ instances on M[0] (or where `placed` says), all running."""
    where = {n: placed.get(n.split(".")[0].replace("@", "_"), M[0]) for n in WEBS}
    if states is None:
        states = [active(n, m, WEB.hash) for n, m in where.items()]
    return cluster(jobs=dict.fromkeys(WEBS, WEB), placements=where, states=states)


def drain(*phases: tuple[str, str, Phase], reason: str = "") -> Cordon:
    targets = tuple(Target(u, m, p) for u, m, p in phases)
    return Cordon(M[0], DrainState.DRAINING, "d1", targets, reason=reason, since=NOW)


def all_pending() -> Cordon:
    return drain(*((n, "", Phase.PENDING) for n in WEBS))


# ---- begin


def test_begin_targets_every_placed_non_global_unit() -> None:
    view = cluster(
        jobs={"a.service": PLAIN, "b.service": PLAIN, "g.service": GLOBAL, "c.service": PLAIN},
        placements={"a.service": M[0], "b.service": M[0], "c.service": M[1]},
    )
    cordon = begin_drain(view, M[0], None, "d1", NOW, stop_globals=True)
    assert cordon is not None
    assert cordon.state is DrainState.DRAINING and cordon.since == NOW and cordon.stop_globals
    assert [(t.unit, t.machine_id, t.phase) for t in cordon.targets] == [
        ("a.service", "", Phase.PENDING),
        ("b.service", "", Phase.PENDING),
    ]


@pytest.mark.parametrize(
    ("existing", "expect"),
    [
        # nothing placed there: drained at once
        (None, DrainState.DRAINED),
        # a cordoned machine keeps when it was cordoned
        (Cordon(M[0], DrainState.CORDONED, since=5.0), DrainState.DRAINED),
        # already draining: that drain goes on (None)
        (drain(("a.service", "", Phase.PENDING)), None),
        # a drain stopped by a failure is drained again
        (drain(("a.service", M[1], Phase.FAILED)), DrainState.DRAINED),
    ],
    ids=["empty", "cordoned-first", "draining", "stopped"],
)
def test_begin_given_the_existing_cordon(existing: Cordon | None, expect: object) -> None:
    view = cluster(jobs={}, placements={})
    cordon = begin_drain(view, M[0], existing, "d2", NOW, stop_globals=False)
    if expect is None:
        assert cordon is None
        return
    assert cordon is not None and cordon.state is expect and cordon.id == "d2"
    assert cordon.since == (existing.since if existing else NOW)


# ---- the engine's step


def test_one_at_a_time_non_running_first() -> None:
    # web@3 does not run: moving it takes nothing down, it goes first
    states = [active(n, M[0], WEB.hash) for n in WEBS if n != "web@3.service"]
    step = plan_drain(all_pending(), web_cluster(states), NOW)
    assert step.released == ("web@3.service",)
    phases = {t.unit: t.phase for t in step.cordon.targets}
    assert phases["web@3.service"] is Phase.UPDATING
    assert sum(p is Phase.UPDATING for p in phases.values()) == 1
    # the next step releases nothing more while one is moving
    again = plan_drain(step.cordon, web_cluster(states), NOW)
    assert not again.released


def test_budget_allows_one_of_five_then_waits_and_says_so() -> None:
    view = web_cluster()
    step = plan_drain(all_pending(), view, NOW)
    assert step.released == ("web@1.service",)
    # web@1 left M[0] and is not running yet: 4 of 5 run, MinAvailable=4 forbids another
    moved = [active(n, M[0], WEB.hash) for n in WEBS[1:]]
    view = web_cluster(moved, web_1=M[1])
    step = plan_drain(step.cordon, view, NOW)
    t1 = step.cordon.targets[0]
    assert (t1.machine_id, t1.phase) == (M[1], Phase.UPDATING)  # followed where it went
    healthy = active("web@1.service", M[1], WEB.hash, gate="d1", health="healthy")
    unjudged = replace(healthy, gate="", health="")
    # running on M[1] but not judged yet: nothing released
    step2 = plan_drain(step.cordon, web_cluster([*moved, unjudged], web_1=M[1]), NOW)
    assert not step2.released
    # a budget that cannot be met: the drain waits, the reason says why
    view = web_cluster([*moved, healthy], web_1=M[1])
    stopped = [active(n, M[0], WEB.hash) for n in WEBS[1:4]]  # web@5 not running: 4 run
    view_short = web_cluster([*stopped, healthy], web_1=M[1])
    step3 = plan_drain(step.cordon, view_short, NOW)
    assert step3.cordon.targets[0].phase is Phase.HEALTHY
    assert step3.released == ("web@5.service",)  # not running: released whatever the budget
    # all five running, one healthy elsewhere: the next may go (5 - 1 >= 4)
    step4 = plan_drain(step.cordon, view, NOW)
    assert step4.released == ("web@2.service",)


def test_budget_wait_reason() -> None:
    # only four of five run (web@5 is elsewhere and dead): releasing a running one leaves 3
    states = [active(n, M[0], WEB.hash) for n in WEBS[:4]]
    view = web_cluster(states, web_5=M[1])
    cordon = drain(*((n, "", Phase.PENDING) for n in WEBS[:4]))
    step = plan_drain(cordon, view, NOW)
    assert not step.released
    assert step.cordon.reason == (
        "waiting: DisruptionBudget=MinAvailable=4 of web@.service: 4 running"
    )
    assert step.cordon.state is DrainState.DRAINING
    # the same again: no change
    assert not plan_drain(step.cordon, view, NOW).changed


@pytest.mark.parametrize(
    ("jobs", "placements", "desired", "why"),
    [
        ({}, {}, JobState.LAUNCHED, "the unit was destroyed"),
        ({"a.service": PLAIN}, {}, JobState.INACTIVE, "the unit was unloaded"),
        ({"a.service": PLAIN}, {"a.service": M[2]}, JobState.LAUNCHED, "moved to 33333333"),
    ],
    ids=["destroyed", "unloaded", "moved-elsewhere"],
)
def test_skipped(jobs: dict, placements: dict, desired: JobState, why: str) -> None:
    view = cluster(jobs=jobs, placements=placements, desired=desired)
    step = plan_drain(drain(("a.service", "", Phase.PENDING)), view, NOW)
    assert step.cordon.targets[0].phase is Phase.SKIPPED
    assert step.cordon.targets[0].reason == why
    assert step.cordon.state is DrainState.DRAINED  # nothing left to move


def test_healthy_last_one_drains_the_machine() -> None:
    view = cluster(
        jobs={"a.service": PLAIN},
        placements={"a.service": M[1]},
        states=[active("a.service", M[1], PLAIN.hash, gate="d1", health="healthy")],
    )
    cordon = drain(("a.service", M[1], Phase.UPDATING))
    step = plan_drain(cordon, view, NOW)
    assert step.cordon.state is DrainState.DRAINED and step.cordon.reason == ""
    assert ("", "drained") in step.changes
    assert drain_progress(step.cordon) == "1/1 moved, 0 in progress, 0 pending"
    assert drain_over(step.cordon)


def test_unhealthy_stops_the_drain() -> None:
    view = cluster(
        jobs={"a.service": PLAIN, "b.service": PLAIN},
        placements={"a.service": M[1], "b.service": M[0]},
        states=[
            UnitState(
                "a.service", M[1], PLAIN.hash, "loaded", "failed", "failed",
                gate="d1", health="unhealthy", health_reason="systemd says failed",
            ),
        ],
    )  # fmt: skip
    cordon = drain(("a.service", M[1], Phase.UPDATING), ("b.service", "", Phase.PENDING))
    step = plan_drain(cordon, view, NOW)
    a, b = step.cordon.targets
    assert (a.phase, a.reason) == (Phase.FAILED, "systemd says failed")
    assert b.phase is Phase.PENDING and not step.released
    assert step.cordon.state is DrainState.DRAINING
    assert step.cordon.reason.startswith("stopped: a.service failed on 22222222: systemd says")
    assert drain_over(step.cordon)
    assert not plan_drain(step.cordon, view, NOW).changed


def test_a_health_report_of_another_drain_is_not_ours() -> None:
    view = cluster(
        jobs={"a.service": PLAIN},
        placements={"a.service": M[1]},
        states=[active("a.service", M[1], PLAIN.hash, gate="old", health="healthy")],
    )
    assert not plan_drain(drain(("a.service", M[1], Phase.UPDATING)), view, NOW).changed


def test_held_unit_waits_with_the_schedulers_reason() -> None:
    view = cluster(jobs={"p.service": PINNED}, placements={"p.service": M[0]})
    cordon = drain(("p.service", "", Phase.UPDATING))
    step = plan_drain(cordon, view, NOW, {"p.service": "machine is cordoned"})
    assert step.cordon.reason == "waiting: p.service has no other machine: machine is cordoned"
    assert step.cordon.state is DrainState.DRAINING


def test_unit_placed_after_the_drain_began_is_added() -> None:
    view = cluster(jobs={"late.service": PLAIN}, placements={"late.service": M[0]})
    step = plan_drain(drain(), view, NOW)
    assert [(t.unit, t.phase) for t in step.cordon.targets] == [("late.service", Phase.UPDATING)]
    assert step.released == ("late.service",)


def test_not_draining_is_left_alone() -> None:
    cordoned = Cordon(M[0], DrainState.CORDONED, since=NOW)
    view = cluster(jobs={"a.service": PLAIN}, placements={"a.service": M[0]})
    assert not plan_drain(cordoned, view, NOW).changed
    assert released(cluster(jobs={}, placements={}, cordons=(cordoned,))) == {}


@pytest.mark.parametrize(
    ("cordon", "expect"),
    [
        (Cordon(M[0], DrainState.DRAINED, stop_globals=True), True),
        (Cordon(M[0], DrainState.DRAINED, stop_globals=False), False),
        (Cordon(M[0], DrainState.DRAINING, stop_globals=True), False),  # not yet
        (Cordon(M[0], DrainState.CORDONED), False),
    ],
    ids=["drained-stop", "drained-keep", "draining", "cordoned"],
)
def test_stop_globals_once_drained(cordon: Cordon, expect: bool) -> None:
    view = cluster(jobs={}, placements={}, cordons=(cordon,))
    assert stops_globals(view, M[0]) is expect
    assert not stops_globals(view, M[1])


# ---- the engine's planner: cordoned machines and released units


def test_cordoned_machine_gets_no_new_unit_and_keeps_its_units() -> None:
    cordoned = Cordon(M[0], DrainState.CORDONED)
    view = cluster(
        jobs={"old.service": PLAIN, "new.service": PLAIN, "p.service": PINNED},
        placements={"old.service": M[0]},
        cordons=(cordoned,),
    )
    plan = plan_for(view, {})
    moves = {(t.job, t.action.value, t.machine_id) for t in plan.tasks}
    assert ("new.service", "schedule", M[1]) in moves  # never M[0]
    assert not any(job == "old.service" for job, _, _ in moves)  # stays
    assert not any(machine == M[0] for _, action, machine in moves if action == "schedule")
    assert plan.unplaced["p.service"] == "machine is cordoned (11111111)"


def test_released_unit_moves_in_one_step_others_stay() -> None:
    cordon = drain(("a.service", "", Phase.UPDATING), ("b.service", "", Phase.PENDING))
    view = cluster(
        jobs={"a.service": PLAIN, "b.service": PLAIN},
        placements={"a.service": M[0], "b.service": M[0]},
        cordons=(cordon,),
    )
    assert released(view) == {"a.service": M[0]}
    plan = plan_for(view, {})
    assert [(t.job, t.action.value, t.machine_id, t.reason) for t in plan.tasks] == [
        ("a.service", "unschedule", M[0], Reason.DRAINED),
        ("a.service", "schedule", M[1], Reason.DRAINED),
    ]


def test_released_unit_no_other_machine_takes_stays_held() -> None:
    cordon = drain(("p.service", "", Phase.UPDATING))
    view = cluster(jobs={"p.service": PINNED}, placements={"p.service": M[0]}, cordons=(cordon,))
    plan = plan_for(view, {})
    assert plan.tasks == ()
    assert "p.service" not in plan.unplaced
    assert "machine is cordoned" in plan.held["p.service"]


# ---- the API's requests


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ({}, False),
        ({"stopGlobals": True}, True),
        ([], Refuse(400, "unable to decode body: expected a JSON object")),
        ({"stopGlobals": "yes"}, Refuse(400, "unable to decode body: stopGlobals must be true or false")),
        ({"stop": True}, Refuse(400, "unknown field 'stop' in body: expected stopGlobals")),
    ],
    ids=["default", "stop-globals", "not-object", "not-bool", "unknown-field"],
)  # fmt: skip
def test_read_drain(body: object, expect: object) -> None:
    assert read_drain(body) == expect


def test_read_machine_id() -> None:
    assert read_machine_id(M[0]) == M[0]
    assert isinstance(read_machine_id(""), Refuse)
    refused = read_machine_id("a b")
    assert isinstance(refused, Refuse) and refused.code == 400
