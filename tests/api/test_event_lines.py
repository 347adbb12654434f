"""The lines of `GET /fleet/v1/x/events` (pure: `snapshot_line`, `change_lines`): what a reader
needs to get from the view it holds to the registry's next one, on views built by hand."""

from __future__ import annotations

import pytest

from fleetd.api.events import change_lines, snapshot_line
from fleetd.model import (
    DynamicMetadata,
    Job,
    JobState,
    LeaderInfo,
    Machine,
    Placement,
    Policy,
    Rollout,
    RolloutAction,
    Target,
    UnitContent,
    UnitState,
)
from fleetd.reconcile.rollout_request import rollout_json
from fleetd.registry import Changed, ClusterView, KeyKind, Removed, Update
from fleetd.unit import parse_unit

HELLO = parse_unit("[Service]\nExecStart=/bin/sh -c 'while true; do echo Hello; sleep 1; done'\n")
M1, M2 = "1" * 32, "2" * 32
OPTIONS = [{"section": "Service", "name": "ExecStart",
            "value": "/bin/sh -c 'while true; do echo Hello; sleep 1; done'"}]  # fmt: skip


def cluster() -> ClusterView:
    """hello.service launched on M1 (running), apache@1.service loaded and unplaced; M1 with a
    configured role the API replaced, M2 with none."""
    view = ClusterView()
    view.put_doc(Machine(M1, "10.0.0.1", {"role": "web", "disk": "hdd"}))
    view.put_doc(Machine(M2, "10.0.0.2"))
    view.put_doc(DynamicMetadata(M1, {"role": "db", "disk": ""}))
    view.put_doc(UnitContent(HELLO))
    view.put_doc(Job("hello.service", HELLO.hash, JobState.LAUNCHED))
    view.put_doc(Job("apache@1.service", HELLO.hash, JobState.LOADED))
    view.put_doc(Placement("hello.service", M1))
    view.put_doc(UnitState("hello.service", M1, HELLO.hash, "loaded", "active", "running"))
    view.revision = 7
    return view


HELLO_UNIT = {"name": "hello.service", "options": OPTIONS, "desiredState": "launched",
              "currentState": "launched", "machineID": M1, "hash": HELLO.hash}  # fmt: skip
APACHE_UNIT = {"name": "apache@1.service", "options": OPTIONS, "desiredState": "loaded",
               "currentState": "inactive", "hash": HELLO.hash}  # fmt: skip
HELLO_STATE = {"name": "hello.service", "hash": HELLO.hash, "machineID": M1,
               "systemdLoadState": "loaded", "systemdActiveState": "active",
               "systemdSubState": "running"}  # fmt: skip
# M1's dynamic metadata wins over its configuration; "" hides a configured key
MACHINES = [{"id": M1, "primaryIP": "10.0.0.1", "metadata": {"role": "db"}},
            {"id": M2, "primaryIP": "10.0.0.2"}]  # fmt: skip


def test_the_first_line_is_the_whole_cluster_in_the_listings_shapes() -> None:
    assert snapshot_line(cluster().freeze()) == {
        "type": "snapshot",
        "revision": 7,
        "units": [APACHE_UNIT, HELLO_UNIT],  # by name, each with its content's hash
        "states": [HELLO_STATE],
        "machines": MACHINES,
        "rollouts": [],
    }


ROLLOUT = Rollout("hello.service", "r1", RolloutAction.RESTART, HELLO.hash, HELLO.hash,
                  Policy(), (Target("hello.service", M1),))  # fmt: skip


def rolling() -> ClusterView:
    view = cluster()
    view.put(KeyKind.ROLLOUT, "hello.service", ROLLOUT)
    return view


def destroyed() -> ClusterView:
    view = cluster()
    view.delete(KeyKind.JOB, "hello.service")
    view.delete(KeyKind.SCHEDULE, "hello.service")
    return view


def content_gone() -> ClusterView:
    view = cluster()
    view.delete(KeyKind.UNIT, HELLO.hash)
    return view


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        # the start, or a resync after a compaction: the reader starts over from a snapshot
        pytest.param(Update(cluster(), (), everything=True),
                     [snapshot_line(cluster().freeze())], id="resync"),
        # a machine came, went or changed metadata: the whole (short) machine list
        pytest.param(Update(cluster(), (Removed(7, KeyKind.MACHINE, M2),), machines=True),
                     [{"type": "machines", "revision": 7, "machines": MACHINES}], id="machines"),
        # the units a change touches, by name, each as it is now
        pytest.param(Update(cluster(), (Changed(7, KeyKind.UNIT, HELLO.hash, UnitContent(HELLO)),),
                            units=frozenset({"hello.service", "apache@1.service"})),
                     [{"type": "units", "revision": 7, "units": [
                         {"name": "apache@1.service", "unit": APACHE_UNIT, "states": []},
                         {"name": "hello.service", "unit": HELLO_UNIT, "states": [HELLO_STATE]},
                     ]}], id="units"),
        # destroyed: unit null; the state its machine still publishes goes with its own event
        pytest.param(Update(destroyed(), (Removed(7, KeyKind.JOB, "hello.service"),),
                            units=frozenset({"hello.service"})),
                     [{"type": "units", "revision": 7, "units": [
                         {"name": "hello.service", "unit": None, "states": [HELLO_STATE]}]}],
                     id="destroyed"),
        # a job whose content is not there (yet) cannot be shown as a unit
        pytest.param(Update(content_gone(), (Removed(7, KeyKind.UNIT, HELLO.hash),),
                            units=frozenset({"apache@1.service"})),
                     [{"type": "units", "revision": 7, "units": [
                         {"name": "apache@1.service", "unit": None, "states": []}]}],
                     id="content-gone"),
        # both in one batch: machines first, then the units
        pytest.param(Update(cluster(), (Removed(7, KeyKind.MACHINE, M2),
                                        Removed(7, KeyKind.SCHEDULE, "hello.service")),
                            units=frozenset({"hello.service"}), machines=True),
                     [{"type": "machines", "revision": 7, "machines": MACHINES},
                      {"type": "units", "revision": 7, "units": [
                          {"name": "hello.service", "unit": HELLO_UNIT,
                           "states": [HELLO_STATE]}]}], id="machines-and-units"),
        # a rollout written or stepped: every rollout kept, as x/rollouts shows them
        pytest.param(Update(rolling(), (Changed(7, KeyKind.ROLLOUT, "hello.service", ROLLOUT),)),
                     [{"type": "rollouts", "revision": 7,
                       "rollouts": [rollout_json(ROLLOUT)]}], id="rollouts"),
        # a change that shows in none of the views (the engine's leader): no line
        pytest.param(Update(cluster(), (Changed(7, KeyKind.LEADER, "leader", LeaderInfo(M1)),)),
                     [], id="leader"),
    ],
)  # fmt: skip
def test_a_change_is_told_as_the_lines_of_what_it_touched(
    update: Update, expected: list[dict[str, object]]
) -> None:
    assert change_lines(update) == expected
