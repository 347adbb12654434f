"""Which registry events concern the engine: those that can change its plan, and those that
tell it another engine leads."""

from __future__ import annotations

import pytest

from fleetd.model import (
    DynamicMetadata,
    Job,
    JobState,
    LeaderInfo,
    Machine,
    Placement,
    RestartRequest,
    UnitContent,
    UnitState,
)
from fleetd.reconcile.relevance import about_leader, deposed, moves_jobs, replans
from fleetd.registry import Changed, ClusterView, KeyKind, Removed, Resync, Snapshot
from fleetd.unit import parse_unit

HELLO = parse_unit("[Service]\nExecStart=/bin/true\n")
ME, OTHER = "1" * 32, "2" * 32


def job(name: str) -> Job:
    return Job(name, HELLO.hash, JobState.LAUNCHED)


def put(kind: KeyKind, ident, doc) -> Changed:
    return Changed(2, kind, ident, doc)


def gone(kind: KeyKind, ident) -> Removed:
    return Removed(2, kind, ident)


STATE = UnitState("a.service", ME, HELLO.hash, "loaded", "active", "running")
ALL_KINDS = [
    (KeyKind.JOB, "a.service", job("a.service")),
    (KeyKind.UNIT, HELLO.hash, UnitContent(HELLO)),
    (KeyKind.SCHEDULE, "a.service", Placement("a.service", ME)),
    (KeyKind.MACHINE, ME, Machine(ME)),
    (KeyKind.MACHINE_META, ME, DynamicMetadata(ME, {"a": "b"})),
    (KeyKind.STATE, ("a.service", ME), STATE),
    (KeyKind.RESTART, ("a.service", ME), RestartRequest("a.service", ME, "t")),
    (KeyKind.LEADER, "leader", LeaderInfo(ME)),
]
# states and restart requests are about running units, never about where they run
STILL = {KeyKind.STATE, KeyKind.RESTART}


@pytest.mark.parametrize(
    ("kind", "ident", "doc"), [pytest.param(*k, id=k[0].value) for k in ALL_KINDS]
)
@pytest.mark.parametrize("removed", [False, True], ids=["changed", "removed"])
def test_moves_jobs(kind, ident, doc, removed) -> None:
    event = gone(kind, ident) if removed else put(kind, ident, doc)
    assert moves_jobs(event) is (kind not in STILL)


@pytest.mark.parametrize(
    ("kind", "ident", "doc"), [pytest.param(*k, id=k[0].value) for k in ALL_KINDS]
)
def test_about_leader(kind, ident, doc) -> None:
    assert about_leader(put(kind, ident, doc)) is (kind is KeyKind.LEADER)
    assert about_leader(gone(kind, ident)) is (kind is KeyKind.LEADER)


def test_a_resync_may_move_jobs_and_change_the_leader() -> None:
    resync = Resync(5, Snapshot(5))
    assert moves_jobs(resync) and about_leader(resync) and replans([resync])


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([], True, id="first-snapshot"),  # the leader plans what it found
        pytest.param([put(KeyKind.STATE, ("a.service", ME), STATE)], False, id="states-only"),
        pytest.param([put(KeyKind.STATE, ("a.service", ME), STATE),
                      gone(KeyKind.MACHINE, OTHER)], True, id="a-machine-among-states"),
        pytest.param([gone(KeyKind.RESTART, ("a.service", ME))], False, id="restart-only"),
        pytest.param([put(KeyKind.JOB, "a.service", job("a.service"))], True, id="a-job"),
    ],
)  # fmt: skip
def test_replans(events, expected) -> None:
    assert replans(events) is expected


@pytest.mark.parametrize(
    ("leader", "events", "expected"),
    [
        # the leader key names this engine: it leads on
        pytest.param(LeaderInfo(ME), [put(KeyKind.LEADER, "leader", LeaderInfo(ME))], False,
                     id="still-me"),
        # the key went away (resigned, lease ended) or names another engine: step down
        pytest.param(None, [gone(KeyKind.LEADER, "leader")], True, id="key-gone"),
        pytest.param(LeaderInfo(OTHER), [put(KeyKind.LEADER, "leader", LeaderInfo(OTHER))], True,
                     id="another-engine"),
        # a batch without leader events says nothing of the leadership, whatever the view holds
        pytest.param(None, [put(KeyKind.JOB, "a.service", job("a.service"))], False,
                     id="no-leader-event"),
        pytest.param(None, [], False, id="first-snapshot"),
        # a resync whose snapshot has another leader
        pytest.param(LeaderInfo(OTHER), [Resync(7, Snapshot(7))], True, id="resync"),
    ],
)  # fmt: skip
def test_deposed(leader, events, expected) -> None:
    view = ClusterView(Snapshot(1, leaders={"leader": leader} if leader else {}))
    assert deposed(view, events, ME) is expected
