"""What an agent tells the cluster of its units: the state document, which ones to put, and the
restart tokens it did before it was restarted itself."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fleetd.model import RestartRequest, UnitState
from fleetd.reconcile.publish import restarts_done_before, state_document, states_to_publish
from fleetd.registry import ClusterView, Snapshot

ME, OTHER = "1" * 32, "2" * 32
H1 = "a" * 40
EXIT = "ExecStart=/bin/false (code=exited, status=1/FAILURE)"


@dataclass(frozen=True)
class Said:
    """What systemd said of a unit, as the systemd adapter pushes it."""

    load: str = "loaded"
    active: str = "active"
    sub: str = "running"
    result: str = ""
    exit: str = ""
    load_error: str = ""


def doc(name: str = "hello.service", active: str = "active", sub: str = "running", **details):
    return UnitState(name, ME, H1, "loaded", active, sub, **details)


@pytest.mark.parametrize(
    ("said", "job", "restarted", "expected"),
    [
        # running: systemd's three states, nothing more to say
        pytest.param(Said(), "", "", doc(), id="running"),
        # failed: why, in systemd's words
        pytest.param(Said(active="failed", sub="failed", result="exit-code", exit=EXIT), "", "",
                     doc(active="failed", sub="failed", result="exit-code", exit=EXIT),
                     id="failed-with-result-and-exit"),
        # cannot be loaded: systemd's LoadError
        pytest.param(Said(load="not-found", active="inactive", sub="dead",
                          load_error="Unit hello.service not found."), "", "",
                     UnitState("hello.service", ME, H1, "not-found", "inactive", "dead",
                               load_error="Unit hello.service not found."),
                     id="load-error"),
        # the start job did not end in "done" (a dependency failed, it timed out)
        pytest.param(Said(active="inactive", sub="dead"), "dependency", "",
                     doc(active="inactive", sub="dead", job="dependency"), id="start-job-result"),
        # the last restart done here: waiters of `fleetctl restart` see their token
        pytest.param(Said(), "", "t1", doc(restarted="t1"), id="restart-token"),
        # everything at once
        pytest.param(Said(active="failed", sub="failed", result="signal", exit=EXIT), "failed",
                     "t2", doc(active="failed", sub="failed", result="signal", exit=EXIT,
                               job="failed", restarted="t2"), id="all-details"),
    ],
)  # fmt: skip
def test_state_document(said, job, restarted, expected) -> None:
    assert state_document(ME, "hello.service", H1, said, job, restarted) == expected


def test_no_document_before_systemd_said_anything() -> None:
    # a unit written but not yet reported by systemd: publishing "nothing" would tell waiters
    # it is inactive; it is published once its state is known
    assert state_document(ME, "hello.service", H1, None, "failed", "t1") is None


def test_a_document_without_details_is_what_older_fleetds_publish() -> None:
    # the details are left out of the JSON while empty, so older readers see the same document
    plain = state_document(ME, "hello.service", H1, Said())
    assert plain is not None
    assert set(plain.to_dict()) == {"name", "machine", "hash", "load", "active", "sub"}


@pytest.mark.parametrize(
    ("documents", "published", "expected"),
    [
        # a new unit's first state
        pytest.param({"a.service": doc("a.service")}, {}, ["a.service"], id="first"),
        # unchanged: a burst of signals that changes nothing is no write
        pytest.param({"a.service": doc("a.service")}, {"a.service": doc("a.service")}, [],
                     id="unchanged"),
        pytest.param({"a.service": doc("a.service", "failed", "failed")},
                     {"a.service": doc("a.service")}, ["a.service"], id="active-changed"),
        # a detail alone is a change: a waiter learns why
        pytest.param({"a.service": doc("a.service", result="exit-code")},
                     {"a.service": doc("a.service")}, ["a.service"], id="detail-changed"),
        pytest.param({"a.service": doc("a.service", restarted="t2")},
                     {"a.service": doc("a.service", restarted="t1")}, ["a.service"],
                     id="restart-token-changed"),
        # not known yet: waits, and so does not hide the others
        pytest.param({"a.service": None, "b.service": doc("b.service")}, {}, ["b.service"],
                     id="unknown-waits"),
        # in name order, whatever the order of the units dir
        pytest.param({"c.service": doc("c.service"), "a.service": doc("a.service")}, {},
                     ["a.service", "c.service"], id="sorted"),
        # a new lease carries no states: all published again (the shell clears `published`)
        pytest.param({"a.service": doc("a.service"), "b.service": doc("b.service")}, {},
                     ["a.service", "b.service"], id="new-lease"),
    ],
)  # fmt: skip
def test_states_to_publish(documents, published, expected) -> None:
    got = states_to_publish(documents, published)
    assert [d.name for d in got] == expected
    assert all(d == documents[d.name] for d in got)


def view(states=(), restarts=()) -> ClusterView:
    return ClusterView(
        Snapshot(
            1,
            states={(s.name, s.machine_id): s for s in states},
            restarts={(r.name, r.machine_id): r for r in restarts},
        )
    )


@pytest.mark.parametrize(
    ("states", "restarts", "started", "expected"),
    [
        # the token in the state it published before the restart (lease re-attached)
        pytest.param([doc(restarted="t1")], [RestartRequest("hello.service", ME, "t1")], True,
                     {"hello.service": "t1"}, id="published-token"),
        # published before any restart request: nothing done yet, a pending one will be done
        pytest.param([doc()], [RestartRequest("hello.service", ME, "t2")], True,
                     {"hello.service": ""}, id="published-without-token"),
        # no state left (the lease expired) and adopted running: the request counts as done
        pytest.param([], [RestartRequest("hello.service", ME, "t1")], True,
                     {"hello.service": "t1"}, id="adopted-running-no-state"),
        # not running when adopted: the start to come does the request
        pytest.param([], [RestartRequest("hello.service", ME, "t1")], False, {},
                     id="adopted-stopped-no-state"),
        # a request for another machine is not ours
        pytest.param([], [RestartRequest("hello.service", OTHER, "t1")], True, {},
                     id="request-elsewhere"),
        pytest.param([], [], True, {}, id="nothing-asked"),
    ],
)  # fmt: skip
def test_restarts_done_before(states, restarts, started, expected) -> None:
    got = restarts_done_before(
        view(states, restarts), ME, ["hello.service"], {"hello.service"} if started else set()
    )
    assert got == expected


def test_restarts_done_before_reads_only_this_machines_units() -> None:
    other = UnitState("hello.service", OTHER, H1, "loaded", "active", "running", restarted="t9")
    assert restarts_done_before(view([other]), ME, ["hello.service"], set()) == {}
