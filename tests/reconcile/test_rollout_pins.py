"""What rollouts and drains change for one machine's agent (pure): the content a pinned unit
runs, which rollout and cordon events make it plan again, and the health verdict in its state."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fleetd.model import (
    Cordon,
    DrainState,
    Job,
    JobState,
    Phase,
    Policy,
    Rollout,
    RolloutAction,
    RolloutState,
    Target,
    UnitContent,
    UnitState,
)
from fleetd.reconcile.publish import Verdict, state_document, verdicts_before
from fleetd.reconcile.relevance import LocalJobs
from fleetd.registry import Changed, ClusterView, KeyKind, Removed, Snapshot
from fleetd.unit import parse_unit

ME, OTHER = "1" * 32, "2" * 32
V1 = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n")
V2 = parse_unit("[Service]\nExecStart=/bin/sleep 1000000\n[X-Fleet]\nUpdateMinHealthyTime=2s\n")
GLOBAL_V1 = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n")
GLOBAL_V2 = parse_unit("[Service]\nExecStart=/bin/sleep 99\n[X-Fleet]\nGlobal=true\n")


def rollout(name: str, *targets: Target, frm=V1, to=V2, action=RolloutAction.UPDATE,
            state=RolloutState.RUNNING) -> Rollout:  # fmt: skip
    return Rollout(name, "r1", action, frm.hash, to.hash, Policy(), targets, state)


def view_of(jobs: dict[str, object], placements: dict[str, str], **fields) -> ClusterView:
    units = (V1, V2, GLOBAL_V1, GLOBAL_V2)
    return ClusterView(
        Snapshot(
            1,
            jobs={n: Job(n, u.hash, JobState.LAUNCHED) for n, u in jobs.items()},
            units={u.hash: UnitContent(u) for u in units},
            placements=placements,
            **fields,
        )
    )


def started(view: ClusterView) -> LocalJobs:
    local = LocalJobs(ME)
    local.note(view, None)
    local.jobs(view)
    return local


# ---- pins


@pytest.mark.parametrize(
    ("unit", "rollouts", "runs"),
    [
        # no rollout: the job's content
        pytest.param("web@1.service", {}, V2.hash, id="no-rollout"),
        # this instance not touched yet: the previous version
        pytest.param("web@1.service", {"web@.service": rollout(
            "web@.service", Target("web@1.service", ME))}, V1.hash, id="pending"),
        # being updated: the new one
        pytest.param("web@1.service", {"web@.service": rollout(
            "web@.service", Target("web@1.service", ME, Phase.UPDATING))}, V2.hash, id="updating"),
        # being reverted: the previous one again
        pytest.param("web@1.service", {"web@.service": rollout(
            "web@.service", Target("web@1.service", ME, Phase.REVERTING))}, V1.hash,
            id="reverting"),
        # the rollout names this instance on another machine only (it moved here since)
        pytest.param("web@1.service", {"web@.service": rollout(
            "web@.service", Target("web@1.service", OTHER))}, V2.hash, id="target-elsewhere"),
        # a finished rollout pins nothing
        pytest.param("web@1.service", {"web@.service": rollout(
            "web@.service", Target("web@1.service", ME), state=RolloutState.REVERTED)}, V2.hash,
            id="finished"),
        # a Global unit's own rollout
        pytest.param("g.service", {"g.service": rollout(
            "g.service", Target("g.service", ME), frm=GLOBAL_V1, to=GLOBAL_V2)}, GLOBAL_V1.hash,
            id="global-pending"),
    ],
)  # fmt: skip
def test_a_pinned_unit_runs_the_rollouts_version(unit, rollouts, runs) -> None:
    content = GLOBAL_V2 if unit == "g.service" else V2
    placements = {} if unit == "g.service" else {unit: ME}
    view = view_of({unit: content}, placements, rollouts=rollouts)
    local = started(view)
    desired = local.desired(view, {})
    assert desired[unit].hash == runs
    # the requirements (update policy among them) are those of the content it runs
    expected = 2.0 if runs == V2.hash else 10.0
    assert local.policies[unit].min_healthy == expected


def test_a_pinned_content_not_known_keeps_the_jobs_requirements() -> None:
    """The previous content is gone from the registry: the unit still runs what is on disk
    (the plan writes nothing when the file is that content) with the job's requirements."""
    pinned = rollout("web@.service", Target("web@1.service", ME), frm=parse_unit(
        "[Service]\nExecStart=/bin/gone\n"))  # fmt: skip
    view = view_of({"web@1.service": V2}, {"web@1.service": ME},
                   rollouts={"web@.service": pinned})  # fmt: skip
    local = started(view)
    assert local.desired(view, {})["web@1.service"].hash == pinned.from_hash
    assert local.policies["web@1.service"].min_healthy == 2.0  # V2's UpdateMinHealthyTime


# ---- which rollout and cordon events concern this machine


def put(kind: KeyKind, ident: str, doc) -> Changed:
    return Changed(2, kind, ident, doc)


HELD = {"web@1.service": ME, "web@2.service": OTHER, "db.service": OTHER}


@pytest.mark.parametrize(
    ("before", "event", "relevant"),
    [
        # a rollout of a template with an instance held here
        pytest.param({}, put(KeyKind.ROLLOUT, "web@.service", rollout("web@.service")), True,
                     id="template-held-here"),
        # a rollout of a unit held elsewhere, no target here: nothing to do
        pytest.param({}, put(KeyKind.ROLLOUT, "db.service", rollout("db.service")), False,
                     id="held-elsewhere"),
        # a target on this machine (its unit not placed here yet)
        pytest.param({}, put(KeyKind.ROLLOUT, "db.service", rollout(
            "db.service", Target("db.service", ME))), True, id="target-here"),
        # the last version named this machine, this one not: it must stop judging
        pytest.param({"db.service": rollout("db.service", Target("db.service", ME))},
                     put(KeyKind.ROLLOUT, "db.service", rollout(
                         "db.service", Target("db.service", OTHER))), True, id="target-left"),
        pytest.param({"db.service": rollout("db.service", Target("db.service", ME))},
                     Removed(2, KeyKind.ROLLOUT, "db.service"), True, id="removed-concerning"),
        pytest.param({"db.service": rollout("db.service")},
                     Removed(2, KeyKind.ROLLOUT, "db.service"), False, id="removed-elsewhere"),
        # a drain whose unit moves to this machine
        pytest.param({}, put(KeyKind.CORDON, OTHER, Cordon(OTHER, DrainState.DRAINING, "d1", (
            Target("db.service", ME, Phase.UPDATING),))), True, id="drain-to-here"),
        # a drain elsewhere of units not held here
        pytest.param({}, put(KeyKind.CORDON, OTHER, Cordon(OTHER, DrainState.DRAINING, "d1", (
            Target("db.service", "3" * 32, Phase.UPDATING),))), False, id="drain-elsewhere"),
        # a machine cordoned, nothing drained
        pytest.param({}, put(KeyKind.CORDON, OTHER, Cordon(OTHER)), False, id="cordon-only"),
    ],
)  # fmt: skip
def test_rollout_and_cordon_events(before, event, relevant) -> None:
    fields = {"rollouts": before} if before else {}
    view = view_of({n: V2 for n in HELD}, HELD, **fields)
    local = started(view)
    view.apply(event)
    assert local.note(view, event) is relevant


# ---- the verdict in the unit's state


@dataclass(frozen=True)
class Said:
    load: str = "loaded"
    active: str = "active"
    sub: str = "running"
    result: str = ""
    exit: str = ""
    load_error: str = ""


def test_the_state_carries_the_last_verdict() -> None:
    verdict = Verdict("r1", "unhealthy", "not healthy within 3s: not active: activating/start")
    doc = state_document(ME, "web@1.service", V2.hash, Said(), verdict=verdict)
    assert doc == UnitState("web@1.service", ME, V2.hash, "loaded", "active", "running",
                            gate="r1", health="unhealthy", health_reason=verdict.reason)  # fmt: skip
    assert state_document(ME, "web@1.service", V2.hash, Said()).gate == ""


def test_verdicts_published_before_a_restart_are_kept() -> None:
    published = {
        ("a.service", ME): UnitState("a.service", ME, V2.hash, "loaded", "active", "running",
                                     gate="r1", health="healthy", health_reason="ok"),
        ("b.service", ME): UnitState("b.service", ME, V2.hash, "loaded", "active", "running"),
        ("a.service", OTHER): UnitState("a.service", OTHER, V2.hash, "loaded", "active",
                                        "running", gate="r1", health="checking"),
    }  # fmt: skip
    view = ClusterView(Snapshot(1, states=published))
    assert verdicts_before(view, ME, ["a.service", "b.service", "c.service"]) == {
        "a.service": Verdict("r1", "healthy", "ok")
    }
