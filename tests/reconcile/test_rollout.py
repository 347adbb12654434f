"""The rollout planner as tables: given a rollout document and the cluster, the next document
(fleetd/reconcile/rollout.py). Pure: documents built by hand, no fakes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetd.model import (
    Job,
    JobState,
    Machine,
    Phase,
    Policy,
    Rollout,
    RolloutAction,
    RolloutState,
    Target,
    UnitContent,
    UnitState,
)
from fleetd.reconcile.rollout import (
    VERDICT_GRACE,
    RolloutRefused,
    Verb,
    begin,
    command,
    covered_units,
    next_due,
    plan_rollout,
)
from fleetd.registry import Snapshot
from fleetd.unit import parse_unit

M = [f"{i}" * 32 for i in range(1, 7)]  # six machines
V1 = parse_unit("[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nGlobal=true\n")
V2 = parse_unit(
    "[Service]\nExecStart=/bin/sleep 2000\n[X-Fleet]\nGlobal=true\nUpdateMaxParallel=2\n"
)
T1 = parse_unit(
    "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nDisruptionBudget=MinAvailable=4\n"
)
T2 = parse_unit(
    "[Service]\nExecStart=/bin/sleep 2000\n[X-Fleet]\nDisruptionBudget=MinAvailable=4\n"
    "UpdateMaxParallel=3\n"
)
NOW = 1000.0


def running(name: str, machine: str, unit_hash: str, **extra: str) -> UnitState:
    return UnitState(name, machine, unit_hash, "loaded", "active", "running", **extra)


def cluster(
    *,
    jobs: dict[str, str],
    states: list[UnitState] = (),  # type: ignore[assignment]
    placements: dict[str, str] | None = None,
    machines: list[str] = M,
    contents: tuple = (V1, V2, T1, T2),
) -> Snapshot:
    return Snapshot(
        1,
        jobs={n: Job(n, h, JobState.LAUNCHED) for n, h in jobs.items()},
        units={u.hash: UnitContent(u) for u in contents},
        machines={m: Machine(m) for m in machines},
        states={(s.name, s.machine_id): s for s in states},
        placements=placements or {},
    )


def global_rollout(phases: list[Phase], policy: Policy = Policy(max_parallel="2")) -> Rollout:
    targets = tuple(Target("g.service", m, p) for m, p in zip(M, phases, strict=False))
    return Rollout("g.service", "r1", RolloutAction.UPDATE, V1.hash, V2.hash, policy, targets)


def global_states(rollout: Rollout, **health: tuple[str, str]) -> list[UnitState]:
    """Each target running the version the rollout gives it; `health`: machine index → (health,
    reason) published under the rollout's id."""
    out = []
    for i, t in enumerate(rollout.targets):
        extra = {}
        if f"m{i}" in health:
            verdict, why = health[f"m{i}"]
            extra = {"gate": rollout.id, "health": verdict, "health_reason": why}
        out.append(running(t.unit, t.machine_id, rollout.hash_for(t), **extra))
    return out


def phases(rollout: Rollout) -> list[Phase]:
    return [t.phase for t in rollout.targets]


P, U, H, F, RV, RD, S = (
    Phase.PENDING,
    Phase.UPDATING,
    Phase.HEALTHY,
    Phase.FAILED,
    Phase.REVERTING,
    Phase.REVERTED,
    Phase.SKIPPED,
)


# ---- begin


def test_a_global_unit_rolls_over_every_machine_that_has_it() -> None:
    view = cluster(
        jobs={"g.service": V1.hash}, states=[running("g.service", m, V1.hash) for m in M]
    )
    rollout = begin(view, "g.service", RolloutAction.UPDATE, "r1", NOW, V2)
    assert rollout is not None
    assert [t.machine_id for t in rollout.targets] == M
    assert set(phases(rollout)) == {P}
    assert (rollout.from_hash, rollout.to_hash) == (V1.hash, V2.hash)
    assert rollout.policy.max_parallel == "2"  # the new version's policy
    assert rollout.started == NOW


def test_a_template_rolls_over_its_launched_instances_where_placed() -> None:
    jobs = {f"web@{i}.service": T1.hash for i in range(1, 6)}
    placements = {f"web@{i}.service": M[i - 1] for i in range(1, 6)}
    view = cluster(jobs=jobs, placements=placements)
    assert covered_units(view, "web@.service") == sorted(jobs)
    rollout = begin(view, "web@.service", RolloutAction.UPDATE, "r1", NOW, T2)
    assert rollout is not None
    assert [(t.unit, t.machine_id) for t in rollout.targets] == sorted(placements.items())
    assert rollout.policy.min_available == "4"


@pytest.mark.parametrize(
    ("jobs", "name", "unit", "message"),
    [
        ({}, "web@.service", T2, "has no launched instance"),
        ({"g.service": V2.hash}, "g.service", V2, "already runs this version"),
        ({"web@1.service": T1.hash, "web@2.service": T2.hash}, "web@.service", T2,
         "run different versions"),
        ({"g.service": V1.hash}, "g.service", None, "runs on no machine"),
    ],
)  # fmt: skip
def test_a_rollout_that_cannot_begin_says_why(
    jobs: dict[str, str], name: str, unit, message: str
) -> None:
    placements = dict.fromkeys(jobs, M[0])
    view = cluster(jobs=jobs, placements=placements if "@" in name else None)
    action = RolloutAction.UPDATE if unit is not None else RolloutAction.RESTART
    with pytest.raises(RolloutRefused, match=message):
        begin(view, name, action, "r1", NOW, unit)


def test_an_update_of_a_unit_running_nowhere_needs_no_rollout() -> None:
    view = cluster(jobs={"g.service": V1.hash})
    assert begin(view, "g.service", RolloutAction.UPDATE, "r1", NOW, V2) is None


# ---- the engine's steps: (phases before, health published, phases after, state after)

STEPS = [
    # at most MaxParallel=2 at once
    ([P] * 6, {}, [U, U, P, P, P, P], RolloutState.RUNNING),
    # a batch is healthy: the next starts
    ([U, U, P, P, P, P], {"m0": ("healthy", ""), "m1": ("healthy", "")},
     [H, H, U, U, P, P], RolloutState.RUNNING),
    # one healthy of two: one more starts
    ([U, U, P, P, P, P], {"m0": ("healthy", "")}, [H, U, U, P, P, P], RolloutState.RUNNING),
    # still checking: nothing moves
    ([U, U, P, P, P, P], {"m0": ("checking", "")}, [U, U, P, P, P, P], RolloutState.RUNNING),
    # the last healthy: done
    ([H, H, H, H, U, U], {"m4": ("healthy", ""), "m5": ("healthy", "")}, [H] * 6,
     RolloutState.DONE),
    # unhealthy with auto-revert: every touched instance goes back
    ([H, H, U, U, P, P], {"m2": ("unhealthy", "ExecStart=/bin/false (code=exited)")},
     [RV, RV, RV, RV, P, P], RolloutState.REVERTING),
]  # fmt: skip


@pytest.mark.parametrize(("before", "health", "after", "state"), STEPS)
def test_a_global_rollout_moves_on_from_what_the_agents_publish(
    before: list[Phase], health: dict, after: list[Phase], state: RolloutState
) -> None:
    rollout = global_rollout(before)
    view = cluster(jobs={"g.service": V2.hash}, states=global_states(rollout, **health))
    step = plan_rollout(rollout, view, NOW)
    assert phases(step.rollout) == after
    assert step.rollout.state is state
    assert step.revert == (state is RolloutState.REVERTING)
    if state.finished:
        assert step.rollout.finished == NOW


def test_nothing_new_means_the_same_document_and_no_write() -> None:
    rollout = global_rollout([U, U, P, P, P, P])
    view = cluster(jobs={"g.service": V2.hash}, states=global_states(rollout))
    step = plan_rollout(rollout, view, NOW)
    assert step.rollout is rollout and not step.changed


def test_the_failure_reason_names_the_machine_and_systemds_words() -> None:
    rollout = global_rollout([U, U, P, P, P, P])
    view = cluster(
        jobs={"g.service": V2.hash},
        states=global_states(rollout, m1=("unhealthy", "ExecStart=/bin/false (code=exited)")),
    )
    step = plan_rollout(rollout, view, NOW)
    assert step.rollout.reason == (f"g.service on {M[1][:8]}: ExecStart=/bin/false (code=exited)")
    assert step.rollout.targets[1].reason == "ExecStart=/bin/false (code=exited)"


def test_without_auto_revert_a_failure_stops_the_rollout_where_it_is() -> None:
    rollout = global_rollout([H, U, P, P, P, P], Policy(auto_revert=False))
    view = cluster(
        jobs={"g.service": V2.hash}, states=global_states(rollout, m1=("unhealthy", "x"))
    )
    step = plan_rollout(rollout, view, NOW)
    assert step.rollout.state is RolloutState.FAILED and not step.revert
    assert phases(step.rollout) == [H, F, P, P, P, P]
    # and stays so: FAILED is not finished, the instances keep their versions
    again = plan_rollout(step.rollout, view, NOW)
    assert not again.changed
    resumed, revert = command(step.rollout, Verb.RESUME, NOW)
    assert phases(resumed) == [H, P, P, P, P, P] and not revert


def test_reverting_instances_are_reverted_once_they_run_the_previous_version() -> None:
    rollout = replace(global_rollout([RV, RV, P, P, P, P]), state=RolloutState.REVERTING)
    # only the first is back; the second still runs the new version; the others never left v1
    states = [running("g.service", m, V1.hash) for m in M]
    states[1] = running("g.service", M[1], V2.hash)
    view = cluster(jobs={"g.service": V1.hash}, states=states)
    step = plan_rollout(rollout, view, NOW)
    assert phases(step.rollout) == [RD, RV, P, P, P, P]
    assert step.rollout.state is RolloutState.REVERTING
    states[1] = running("g.service", M[1], V1.hash)
    done = plan_rollout(step.rollout, cluster(jobs={"g.service": V1.hash}, states=states), NOW)
    assert done.rollout.state is RolloutState.REVERTED


def test_an_instance_whose_machine_never_answers_fails_past_the_deadline() -> None:
    """An agent judges its own deadline; one that never answers (a fleetd too old for
    rollouts) fails the instance once the deadline and a grace are past (the engine's timer:
    `next_due`)."""
    policy = Policy(max_parallel="2", deadline=60.0)
    rollout = global_rollout([P] * 6, policy)
    view = cluster(jobs={"g.service": V2.hash}, states=global_states(rollout))
    started = plan_rollout(rollout, view, NOW).rollout
    assert [t.since for t in started.targets[:2]] == [NOW, NOW]
    assert next_due(started) == NOW + 60 + VERDICT_GRACE
    view = cluster(jobs={"g.service": V2.hash}, states=global_states(started))
    assert not plan_rollout(started, view, NOW + 60 + VERDICT_GRACE - 1).changed
    late = plan_rollout(started, view, NOW + 60 + VERDICT_GRACE).rollout
    assert late.state is RolloutState.REVERTING
    assert late.targets[0].reason == "its machine said nothing of its health within 90s"
    assert next_due(late) is None


def test_a_machine_that_left_is_skipped_and_frees_its_slot() -> None:
    rollout = global_rollout([U, U, P, P, P, P])
    view = cluster(jobs={"g.service": V2.hash}, states=global_states(rollout), machines=M[1:])
    step = plan_rollout(rollout, view, NOW)
    assert phases(step.rollout) == [S, U, U, P, P, P]
    assert step.rollout.targets[0].reason == "its machine left the cluster"


def test_a_machine_that_no_longer_runs_a_global_unit_is_skipped() -> None:
    rollout = global_rollout([U, U, P, P, P, P])
    states = global_states(rollout)
    del states[1]  # its metadata changed: its agent unloaded the unit, its state went
    view = cluster(jobs={"g.service": V2.hash}, states=states)
    step = plan_rollout(rollout, view, NOW)
    assert phases(step.rollout) == [U, S, U, P, P, P]
    assert step.rollout.targets[1].reason == "it no longer runs there"


def test_a_stopped_unit_is_skipped_everywhere() -> None:
    rollout = global_rollout([U, U, P, P, P, P])
    view = Snapshot(
        1,
        jobs={"g.service": Job("g.service", V2.hash, JobState.LOADED)},
        units={u.hash: UnitContent(u) for u in (V1, V2)},
        machines={m: Machine(m) for m in M},
        states={(s.name, s.machine_id): s for s in global_states(rollout)},
    )
    step = plan_rollout(rollout, view, NOW)
    assert set(phases(step.rollout)) == {S}
    assert step.rollout.state is RolloutState.DONE


def test_a_destroyed_unit_cancels_its_rollout() -> None:
    rollout = global_rollout([U, U, P, P, P, P])
    step = plan_rollout(rollout, cluster(jobs={}), NOW)
    assert step.rollout.state is RolloutState.CANCELLED
    assert step.rollout.reason == "its units were destroyed"


def test_a_unit_replaced_outside_the_rollout_cancels_it() -> None:
    rollout = global_rollout([U, U, P, P, P, P])
    step = plan_rollout(rollout, cluster(jobs={"g.service": T1.hash}), NOW)
    assert step.rollout.state is RolloutState.CANCELLED
    assert "replaced meanwhile" in step.rollout.reason


def test_instances_not_running_go_first() -> None:
    rollout = global_rollout([P] * 6)
    states = global_states(rollout)
    states[4] = replace(states[4], active="failed", sub="failed")
    view = cluster(jobs={"g.service": V2.hash}, states=states)
    assert phases(plan_rollout(rollout, view, NOW).rollout) == [U, P, P, P, U, P]


# ---- canaries


def test_canaries_first_then_wait_for_promote() -> None:
    rollout = global_rollout([P] * 6, Policy(max_parallel="2", canary=1))
    view = cluster(jobs={"g.service": V2.hash}, states=global_states(rollout))
    first = plan_rollout(rollout, view, NOW).rollout
    assert phases(first) == [U, P, P, P, P, P]
    view = cluster(jobs={"g.service": V2.hash}, states=global_states(first, m0=("healthy", "")))
    waiting = plan_rollout(first, view, NOW).rollout
    assert waiting.state is RolloutState.CANARY and phases(waiting) == [H, P, P, P, P, P]
    assert "waiting for rollout promote" in waiting.reason
    assert not plan_rollout(waiting, view, NOW).changed
    promoted, _ = command(waiting, Verb.PROMOTE, NOW)
    assert promoted.state is RolloutState.RUNNING and promoted.promoted
    assert phases(plan_rollout(promoted, view, NOW).rollout) == [H, U, U, P, P, P]


def test_undo_of_a_canary_takes_it_back() -> None:
    rollout = replace(global_rollout([H, P, P, P, P, P], Policy(canary=1)),
                      state=RolloutState.CANARY)  # fmt: skip
    undone, revert = command(rollout, Verb.UNDO, NOW)
    assert revert and undone.state is RolloutState.REVERTING
    assert phases(undone) == [RV, P, P, P, P, P]
    assert undone.hash_for(undone.targets[0]) == V1.hash


# ---- the disruption budget over a template's instances


def template_rollout(phases_: list[Phase], policy: Policy) -> tuple[Rollout, list[UnitState]]:
    targets = tuple(Target(f"web@{i}.service", M[i - 1], p) for i, p in enumerate(phases_, start=1))
    rollout = Rollout("web@.service", "r1", RolloutAction.UPDATE, T1.hash, T2.hash, policy, targets)
    states = [running(t.unit, t.machine_id, rollout.hash_for(t)) for t in targets]
    return rollout, states


def template_view(states: list[UnitState]) -> Snapshot:
    return cluster(
        jobs={f"web@{i}.service": T2.hash for i in range(1, 6)},
        placements={f"web@{i}.service": M[i - 1] for i in range(1, 6)},
        states=states,
    )


def test_the_budget_holds_back_a_batch_larger_than_it_allows() -> None:
    rollout, states = template_rollout([P] * 5, Policy(max_parallel="3", min_available="4"))
    step = plan_rollout(rollout, template_view(states), NOW)
    assert phases(step.rollout) == [U, P, P, P, P]  # 3 allowed, 1 by the budget


def test_the_budget_waits_and_says_so_when_an_instance_is_down() -> None:
    rollout, states = template_rollout([P] * 5, Policy(max_parallel="3", min_available="5"))
    step = plan_rollout(rollout, template_view(states), NOW)
    assert phases(step.rollout) == [P] * 5
    assert step.rollout.reason == (
        "waiting: DisruptionBudget MinAvailable=5 needs 5 of 5 running, 5 are"
    )


def test_a_down_instance_is_updated_without_touching_the_budget() -> None:
    rollout, states = template_rollout([P] * 5, Policy(max_parallel="3", min_available="4"))
    states[2] = replace(states[2], active="failed", sub="failed")
    step = plan_rollout(rollout, template_view(states), NOW)
    assert phases(step.rollout) == [P, P, U, P, P]  # 4 run: none of them may go


def test_an_instance_moved_elsewhere_is_skipped() -> None:
    rollout, states = template_rollout([U, P, P, P, P], Policy(max_parallel="1"))
    view = template_view(states)
    moved = Snapshot(
        1,
        jobs=view.jobs,
        units=view.units,
        machines=view.machines,
        states=view.states,
        placements={**view.placements, "web@1.service": M[5]},
    )
    step = plan_rollout(rollout, moved, NOW)
    assert step.rollout.targets[0].phase is S
    assert step.rollout.targets[0].reason == f"the unit moved to {M[5][:8]}"


# ---- restarts


def test_a_restart_rollout_asks_restarts_of_each_batch() -> None:
    rollout = replace(global_rollout([P] * 6), action=RolloutAction.RESTART, to_hash=V1.hash)
    view = cluster(jobs={"g.service": V1.hash}, states=global_states(rollout))
    step = plan_rollout(rollout, view, NOW)
    assert [t.machine_id for t in step.restarts] == M[:2]
    assert not step.revert


def test_a_failed_restart_stops_there_nothing_to_revert() -> None:
    rollout = replace(global_rollout([U, U, P, P, P, P]), action=RolloutAction.RESTART,
                      to_hash=V1.hash)  # fmt: skip
    view = cluster(
        jobs={"g.service": V1.hash}, states=global_states(rollout, m0=("unhealthy", "x"))
    )
    step = plan_rollout(rollout, view, NOW)
    assert step.rollout.state is RolloutState.FAILED and not step.revert


# ---- commands


@pytest.mark.parametrize(
    ("state", "verb", "after"),
    [
        (RolloutState.RUNNING, Verb.PAUSE, RolloutState.PAUSED),
        (RolloutState.PAUSED, Verb.RESUME, RolloutState.RUNNING),
        (RolloutState.CANARY, Verb.PROMOTE, RolloutState.RUNNING),
        (RolloutState.RUNNING, Verb.UNDO, RolloutState.REVERTING),
        (RolloutState.PAUSED, Verb.UNDO, RolloutState.REVERTING),
    ],
)
def test_commands(state: RolloutState, verb: Verb, after: RolloutState) -> None:
    rollout = replace(global_rollout([H, U, P, P, P, P]), state=state)
    assert command(rollout, verb, NOW)[0].state is after


@pytest.mark.parametrize(
    ("state", "verb", "message"),
    [
        (RolloutState.DONE, Verb.UNDO, "is done: to go back, submit the previous version"),
        (RolloutState.PAUSED, Verb.PAUSE, "is paused: it cannot be paused"),
        (RolloutState.RUNNING, Verb.RESUME, "is running: it cannot be resumed"),
        (RolloutState.REVERTED, Verb.PROMOTE, "is reverted"),
    ],
)
def test_commands_a_rollout_cannot_take_are_refused(
    state: RolloutState, verb: Verb, message: str
) -> None:
    rollout = replace(global_rollout([H] * 6), state=state)
    with pytest.raises(RolloutRefused, match=message):
        command(rollout, verb, NOW)


def test_progress_words() -> None:
    rollout = global_rollout([H, H, U, P, P, S])
    assert rollout.progress == "2/5 updated, 1 in progress, 2 pending, 1 skipped"
