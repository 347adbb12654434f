"""A restart on one machine: fleet's checks of the request, where a unit runs as far as a
restart goes, which tokens count as ours and how the wait ends (the last line included)."""

from __future__ import annotations

import pytest

from fleetd.model import Job, JobState, Machine, RestartRequest, UnitContent, UnitState
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.restart import (
    Outcome,
    Restart,
    RestartAsk,
    plan_restart,
    read_restart,
    restart_outcome,
    runs_on,
)
from fleetd.registry import Changed, ClusterView, KeyKind, Removed, Snapshot, Update
from fleetd.unit import parse_unit

M1, M2 = "1" * 32, "2" * 32
GLOBAL = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n")
PLAIN = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n")
G = Job("g.service", GLOBAL.hash, JobState.LAUNCHED)
P = Job("p.service", PLAIN.hash, JobState.LAUNCHED)


def state(name: str, mid: str, active: str = "active", restarted: str = "", load: str = "loaded"):
    sub = {"active": "running", "inactive": "dead", "failed": "failed"}.get(active, active)
    return UnitState(name, mid, GLOBAL.hash, load, active, sub, restarted=restarted)


def view(job: Job | None, *states: UnitState, placement: str | None = None) -> Snapshot:
    jobs = {job.name: job} if job else {}
    units = {GLOBAL.hash: UnitContent(GLOBAL), PLAIN.hash: UnitContent(PLAIN)}
    return Snapshot(
        1,
        jobs=jobs,
        units=units,
        placements={job.name: placement} if job and placement else {},
        states={(s.name, s.machine_id): s for s in states},
        machines={M1: Machine(M1, "10.0.0.1"), M2: Machine(M2, "10.0.0.2")},
    )


# --- the request alone -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        pytest.param("g.service", [M1], "unable to decode body: expected a JSON object", id="array"),
        # a misspelt field is refused, not ignored: `"wiat": true` would not wait
        pytest.param("g.service", {"machineID": M1, "wiat": True, "machine": M1}, "unknown field 'machine': expected machineID, wait and timeout", id="unknown-field-first-sorted"),
        pytest.param("g.service", {}, "machineID must be the ID of a machine running the unit", id="no-machine"),
        pytest.param("g.service", {"machineID": 7}, "machineID must be the ID of a machine running the unit", id="machine-number"),
        pytest.param("g.service", {"machineID": ""}, "machineID must be the ID of a machine running the unit", id="machine-empty"),
        pytest.param("g.service", {"machineID": M1, "wait": "yes"}, "wait must be true or false", id="wait-string"),
        pytest.param("g.service", {"machineID": M1, "timeout": -1}, "timeout must be a non-negative number of seconds or null", id="timeout-negative"),
        pytest.param("g.service", {"machineID": M1, "timeout": "5s"}, "timeout must be a non-negative number of seconds or null", id="timeout-string"),
        pytest.param("nope.srvice", {"machineID": M1}, 'invalid unit type: "srvice"', id="bad-name"),
        # the body is checked before the name
        pytest.param("nope.srvice", {"machineID": ""}, "machineID must be the ID of a machine running the unit", id="body-before-name"),
    ],
)  # fmt: skip
def test_a_bad_request_is_refused_before_etcd_is_read(
    name: str, body: object, message: str
) -> None:
    assert read_restart(name, body) == Refuse(400, message)


@pytest.mark.parametrize(
    ("body", "wait", "timeout"),
    [
        pytest.param({"machineID": M1}, False, None, id="answer-at-once"),
        pytest.param({"machineID": M1, "wait": True}, True, None, id="wait-until-it-ends"),
        pytest.param({"machineID": M1, "wait": True, "timeout": None}, True, None, id="null-timeout"),
        # zero is a timeout: the wait ends with the state seen at once
        pytest.param({"machineID": M1, "wait": True, "timeout": 0}, True, 0, id="zero-timeout"),
        pytest.param({"machineID": M1, "wait": True, "timeout": 2.5}, True, 2.5, id="seconds"),
    ],
)  # fmt: skip
def test_a_good_request_says_whether_and_how_long_to_wait(
    body: dict[str, object], wait: bool, timeout: float | None
) -> None:
    assert read_restart("g.service", body) == RestartAsk("g.service", M1, wait, timeout)


# --- against the registry --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("snapshot", "name", "expected"),
    [
        # a global unit runs where machines report it
        (view(G, state("g.service", M1), state("g.service", M2, "failed")), "g.service", {M1, M2}),
        # a non-global unit: only on its placed machine (a stale state elsewhere does not count)
        (view(P, state("p.service", M1), state("p.service", M2), placement=M2), "p.service", {M2}),
        # desired loaded: it runs nowhere as far as a restart goes
        (
            view(Job("g.service", GLOBAL.hash, JobState.LOADED), state("g.service", M1)),
            "g.service",
            set(),
        ),
        (view(None), "g.service", None),  # no such unit
    ],
    ids=["global", "placed", "not-launched", "unknown"],
)
def test_runs_on(snapshot, name, expected) -> None:
    assert runs_on(snapshot, name) == expected


@pytest.mark.parametrize(
    ("snapshot", "name", "expected"),
    [
        pytest.param(view(None), "g.service", Refuse(404, "Unit g.service does not exist."), id="no-unit"),
        # M1 reports the unit; M2 is asked
        pytest.param(view(G, state("g.service", M1)), "g.service", Refuse(409, f"Unit g.service does not appear to be running on {M2}."), id="not-there"),
        # a stale state on M2, but the unit is placed on M1: M2's agent would never do it
        pytest.param(view(P, state("p.service", M2), placement=M1), "p.service", Refuse(409, f"Unit p.service does not appear to be running on {M2}."), id="stale-state"),
        # stopped: no agent restarts a unit that is not meant to run
        pytest.param(view(Job("g.service", GLOBAL.hash, JobState.LOADED), state("g.service", M2)), "g.service", Refuse(409, f"Unit g.service does not appear to be running on {M2}."), id="stopped"),
        pytest.param(view(G, state("g.service", M2)), "g.service", Restart("g.service", M2, "t1"), id="running-there"),
    ],
)  # fmt: skip
def test_a_restart_is_asked_only_where_the_unit_runs(
    snapshot: Snapshot, name: str, expected: object
) -> None:
    assert plan_restart(snapshot, RestartAsk(name, M2, True, None), "t1") == expected


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        # the agent did our token and the unit is active: restarted
        (view(G, state("g.service", M1, "active", "t1")), Outcome(True)),
        # not done yet
        (view(G, state("g.service", M1, "active", "t0")), None),
        # done, between its stop and its start, or between automatic restarts: wait on
        (view(G, state("g.service", M1, "activating", "t1")), None),
        (view(G, state("g.service", M1, "deactivating", "t1")), None),
        # done and failed, or not running: a definite answer, in systemd's words
        (
            view(G, state("g.service", M1, "failed", "t1")),
            Outcome(False, "systemd reports ActiveState=failed SubState=failed"),
        ),
        (
            view(G, state("g.service", M1, "inactive", "t1")),
            Outcome(False, "systemd reports loaded/inactive/dead"),
        ),
        (
            view(G, state("g.service", M1, "inactive", "t1", load="not-found")),
            Outcome(False, "systemd cannot load it: LoadState=not-found"),
        ),
        # a later request that replaced ours was done: its restart came after ours was asked
        (view(G, state("g.service", M1, "active", "t2")), Outcome(True)),
        # the machine's state is gone (unloaded, or its lease expired)
        (view(G), Outcome(False, f"machine {M1} no longer reports the unit")),
        (view(None), Outcome(False, "the unit was destroyed")),
        # stopped meanwhile: the agent will not do it
        (
            view(Job("g.service", GLOBAL.hash, JobState.LOADED), state("g.service", M1)),
            Outcome(False, "its desired state is now loaded"),
        ),
    ],
    ids=[
        "restarted",
        "pending",
        "activating",
        "deactivating",
        "failed",
        "inactive",
        "not-found",
        "replaced-request-done",
        "state-gone",
        "destroyed",
        "stopped",
    ],
)
def test_restart_outcome(snapshot, expected) -> None:
    assert restart_outcome(snapshot, "g.service", M1, {"t1", "t2"}) == expected


def test_a_machine_that_left_is_named_so() -> None:
    # its lease ended: its states and its machine key went together
    snapshot = Snapshot(1, jobs={G.name: G}, units={GLOBAL.hash: UnitContent(GLOBAL)})
    assert restart_outcome(snapshot, "g.service", M1, {"t1"}) == Outcome(
        False, f"machine {M1} no longer reports the unit (the machine left the cluster)"
    )


# --- following the watch ---------------------------------------------------------------------
def asked(token: str = "x") -> Changed:
    """The registry event of a request to restart g.service on M1 with `token`."""
    return Changed(2, KeyKind.RESTART, ("g.service", M1), RestartRequest("g.service", M1, token))


def step(*events, done_with: str, units=frozenset({"g.service"}), machines=False) -> Update:
    """An update whose view shows M1's agent done with token `done_with`, the unit active."""
    cluster = ClusterView(view(G, state("g.service", M1, "active", done_with)))
    return Update(cluster, tuple(events), units=units, machines=machines)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # a later request replaced ours: the restart the agent did for it counts
        pytest.param((asked("t2"),), Outcome(True), id="replaced-on-our-machine"),
        # a request for the unit on another machine restarts nothing here
        pytest.param((Changed(2, KeyKind.RESTART, ("g.service", M2),
                              RestartRequest("g.service", M2, "t2")),), None, id="other-machine"),
        # another unit's request on our machine neither
        pytest.param((Changed(2, KeyKind.RESTART, ("h.service", M1),
                              RestartRequest("h.service", M1, "t2")),), None, id="other-unit"),
        # the request's key went (the agent cleans up): no token comes with it
        pytest.param((Removed(2, KeyKind.RESTART, ("g.service", M1)),), None, id="removed"),
    ],
)  # fmt: skip
def test_a_token_counts_as_ours_when_it_replaced_our_request(events, expected) -> None:
    restart = Restart("g.service", M1, "t1")
    assert restart.follow(step(*events, done_with="t2")) == expected
    assert restart.tokens == ({"t1", "t2"} if expected else {"t1"})


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        # the first update is the snapshot itself, read before the request was written
        pytest.param(step(done_with="t1"), None, id="no-events"),
        # a batch about other units says nothing of ours, whatever the view shows
        pytest.param(step(asked(), done_with="t1", units=frozenset({"h.service"})), None,
                     id="other-units"),
        pytest.param(step(asked(), done_with="t1"), Outcome(True), id="ours"),
        # a machine came or went: any unit may be concerned
        pytest.param(step(asked(), done_with="t1", units=frozenset(), machines=True),
                     Outcome(True), id="machines"),
    ],
)  # fmt: skip
def test_only_a_step_that_concerns_the_unit_can_end_the_wait(update, expected) -> None:
    assert Restart("g.service", M1, "t1").follow(update) == expected


@pytest.mark.parametrize(
    ("snapshot", "outcome", "expected"),
    [
        pytest.param(view(G, state("g.service", M1, "active", "t1")), Outcome(True),
                     {"restarted": True}, id="restarted"),
        pytest.param(view(G, state("g.service", M1, "failed", "t1")),
                     Outcome(False, "systemd reports ActiveState=failed SubState=failed"),
                     {"restarted": False, "systemdActiveState": "failed",
                      "systemdSubState": "failed",
                      "reason": "systemd reports ActiveState=failed SubState=failed"},
                     id="failed"),
        # timed out: the reason shows what systemd said last
        pytest.param(view(G, state("g.service", M1, "deactivating", "t0")), None,
                     {"restarted": False, "systemdActiveState": "deactivating",
                      "systemdSubState": "deactivating",
                      "reason": f"timed out waiting for unit g.service to restart on {M1} "
                                "(systemd reports loaded/deactivating/deactivating)"},
                     id="timed-out"),
    ],
)  # fmt: skip
def test_the_last_line_says_how_it_ended_and_what_systemd_says(
    snapshot: Snapshot, outcome: Outcome | None, expected: dict[str, object]
) -> None:
    line = {
        "done": True, "name": "g.service", "machineID": M1, "machineIP": "10.0.0.1",
        "token": "t1", "restarted": True, "systemdLoadState": "loaded",
        "systemdActiveState": "active", "systemdSubState": "running",
    }  # fmt: skip
    assert Restart("g.service", M1, "t1").final(snapshot, outcome) == line | expected


def test_the_last_line_of_a_machine_gone_has_no_address_nor_state() -> None:
    assert Restart("g.service", M1, "t1").final(Snapshot(3), None) == {
        "done": True, "name": "g.service", "machineID": M1, "machineIP": "", "token": "t1",
        "restarted": False,
        "reason": f"timed out waiting for unit g.service to restart on {M1}",
    }  # fmt: skip
