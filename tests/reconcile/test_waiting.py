"""What a waiting fleetctl is told: reached, failed (in systemd's words), or still on its way."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetd.model import Job, JobState, Machine, UnitContent, UnitState
from fleetd.reconcile.waiting import failure, reached, settles, systemd_reason
from fleetd.registry import Snapshot
from fleetd.unit import parse_unit

ME, OTHER = "1" * 32, "2" * 32
SIMPLE = parse_unit("[Service]\nExecStart=/bin/false\n")


def unit(text: str):
    return parse_unit(text)


def view(
    state: UnitState | None,
    *,
    content=SIMPLE,
    desired: JobState = JobState.LAUNCHED,
    placed: str | None = ME,
) -> Snapshot:
    job = Job("bad.service", content.hash, desired)
    return Snapshot(
        revision=1,
        jobs={job.name: job},
        units={content.hash: UnitContent(content)},
        placements={job.name: placed} if placed else {},
        states={(state.name, state.machine_id): state} if state else {},
        machines={ME: Machine(ME, "10.0.0.1", {}), OTHER: Machine(OTHER, "10.0.0.2", {})},
    )


def state(active: str = "failed", sub: str = "failed", **kw: str) -> UnitState:
    fields = {"name": "bad.service", "machine_id": ME, "hash": SIMPLE.hash, "load": "loaded"}
    fields.update(kw)
    return UnitState(
        fields.pop("name"), fields.pop("machine_id"), fields.pop("hash"), fields.pop("load"),
        active, sub, **fields,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("unit_state", "target", "expected"),
    [
        # running, or on its way: no verdict
        pytest.param(state("active", "running"), JobState.LAUNCHED, None, id="active"),
        pytest.param(state("activating", "start-pre"), JobState.LAUNCHED, None, id="start-pre"),
        # Restart= between two attempts is activating/auto-restart, not a failure
        pytest.param(
            state("activating", "auto-restart"), JobState.LAUNCHED, None, id="auto-restart"
        ),
        # failed: systemd's words, with Result= and the process that failed
        pytest.param(
            state(result="exit-code", exit="ExecStart=/bin/false (code=exited, status=1/FAILURE)"),
            JobState.LAUNCHED,
            "systemd reports ActiveState=failed SubState=failed, Result=exit-code, "
            "ExecStart=/bin/false (code=exited, status=1/FAILURE)",
            id="failed-exit-code",
        ),
        # Restart=always that keeps failing: systemd gives up with start-limit-hit
        pytest.param(
            state(result="start-limit-hit"),
            JobState.LAUNCHED,
            "systemd reports ActiveState=failed SubState=failed, Result=start-limit-hit",
            id="start-limit-hit",
        ),
        # a unit systemd refuses to load can reach neither loaded nor launched
        pytest.param(
            state(
                "inactive",
                "dead",
                load="bad-setting",
                load_error="Unit bad.service has a bad unit file setting.",
            ),
            JobState.LOADED,
            "systemd cannot load it: LoadState=bad-setting (Unit bad.service has a bad unit "
            "file setting.)",
            id="bad-setting-load",
        ),
        pytest.param(
            state("inactive", "dead", load="not-found"),
            JobState.LAUNCHED,
            "systemd cannot load it: LoadState=not-found",
            id="not-found",
        ),
        # a start job that ended badly while the unit stays inactive (a dependency failed)
        pytest.param(
            state("inactive", "dead", job="dependency"),
            JobState.LAUNCHED,
            "systemd's start job ended with result dependency (ActiveState=inactive SubState=dead)",
            id="dependency",
        ),
        # waiting for loaded: a failed run says nothing about being loaded
        pytest.param(state(), JobState.LOADED, None, id="failed-but-loaded-is-enough"),
    ],
)
def test_systemd_reason(unit_state: UnitState, target: JobState, expected: str | None) -> None:
    assert systemd_reason(unit_state, target) == expected


@pytest.mark.parametrize(
    ("snapshot", "target", "failed"),
    [
        pytest.param(view(state()), JobState.LAUNCHED, True, id="failed-on-its-machine"),
        # the state of older content (before --replace) says nothing of this attempt
        pytest.param(view(state(hash="0" * 40)), JobState.LAUNCHED, False, id="old-content"),
        # the state of a machine the unit is no longer placed on
        pytest.param(view(state(), placed=OTHER), JobState.LAUNCHED, False, id="other-machine"),
        pytest.param(view(state(), placed=None), JobState.LAUNCHED, False, id="unplaced"),
        # unloading never fails
        pytest.param(view(state()), JobState.INACTIVE, False, id="waiting-for-inactive"),
        # a global unit is never waited for
        pytest.param(
            view(
                state(hash=unit("[Service]\nExecStart=/bin/false\n[X-Fleet]\nGlobal=true\n").hash),
                content=unit("[Service]\nExecStart=/bin/false\n[X-Fleet]\nGlobal=true\n"),
            ),
            JobState.LAUNCHED,
            False,
            id="global",
        ),
    ],
)
def test_failure_counts_only_the_current_attempt(
    snapshot: Snapshot, target: JobState, failed: bool
) -> None:
    line = failure(snapshot, "bad.service", target)
    assert (line is not None) is failed
    if line is not None:
        assert line == {
            "name": "bad.service", "currentState": "failed", "machineID": ME,
            "machineIP": "10.0.0.1", "failed": True, "load": "loaded", "active": "failed",
            "sub": "failed", "reason": "systemd reports ActiveState=failed SubState=failed",
        }  # fmt: skip


def test_failed_is_not_reached_and_active_is() -> None:
    assert reached(view(state()), "bad.service", JobState.LAUNCHED, active=True) is None
    running = view(state("active", "running"))
    assert reached(running, "bad.service", JobState.LAUNCHED, active=True) == {
        "name": "bad.service", "currentState": "launched", "machineID": ME,
        "machineIP": "10.0.0.1",
    }  # fmt: skip
    assert failure(running, "bad.service", JobState.LAUNCHED) is None


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        pytest.param("[Service]\nExecStart=/bin/sleep 1\n", "a.service", True, id="simple"),
        pytest.param("[Service]\nType=exec\nExecStart=/x\n", "a.service", True, id="exec"),
        pytest.param("[Service]\nType=idle\nExecStart=/x\n", "a.service", True, id="idle"),
        # these report active only once the service said it is ready (or finished)
        pytest.param("[Service]\nType=forking\nExecStart=/x\n", "a.service", False, id="forking"),
        pytest.param("[Service]\nType=oneshot\nExecStart=/x\n", "a.service", False, id="oneshot"),
        pytest.param("[Service]\nType=notify\nExecStart=/x\n", "a.service", False, id="notify"),
        pytest.param("[Service]\nBusName=a.b\nExecStart=/x\n", "a.service", False, id="dbus"),
        pytest.param("[Service]\nExecStop=/x\n", "a.service", False, id="no-execstart-oneshot"),
        # the last Type= wins, as in systemd
        pytest.param(
            "[Service]\nType=oneshot\nType=simple\nExecStart=/x\n",
            "a.service",
            True,
            id="last-type-wins",
        ),
        pytest.param("[Socket]\nListenStream=80\n", "a.socket", False, id="socket"),
    ],
)
def test_settles(text: str, name: str, expected: bool) -> None:
    content = unit(text)
    job = Job(name, content.hash, JobState.LAUNCHED)
    snapshot = Snapshot(revision=1, jobs={name: job}, units={content.hash: UnitContent(content)})
    assert settles(snapshot, name) is expected


def test_unit_state_details_round_trip_and_stay_optional() -> None:
    bare = state("active", "running")
    assert "result" not in bare.to_dict() and UnitState.decode(bare.encode()) == bare
    full = replace(bare, active="failed", result="exit-code", exit="x", load_error="y", job="z")
    assert UnitState.decode(full.encode()) == full
