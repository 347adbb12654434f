"""The key layout, event decoding and config checks: pure, no etcd needed."""

from __future__ import annotations

import pytest
from registry_helpers import state, unit

from fleetd.model import Job, LeaderInfo, Machine, ModelError, Placement, UnitContent
from fleetd.registry import (
    EtcdConfig,
    JobChanged,
    JobDeleted,
    KeyLayout,
    LeaderChanged,
    MachineDown,
    MachineUp,
    ScheduleChanged,
    Snapshot,
    StateChanged,
    StateDeleted,
    UnitDeleted,
    UnitStored,
)
from fleetd.registry.events import Change, decode_change
from fleetd.registry.keys import KeyKind

L = KeyLayout()


@pytest.mark.parametrize(
    ("key", "kind", "parts"),
    [
        ("/fleet/job/hello.service", KeyKind.JOB, ("hello.service",)),
        ("/fleet/unit/abc", KeyKind.UNIT, ("abc",)),
        ("/fleet/schedule/a@1.service", KeyKind.SCHEDULE, ("a@1.service",)),
        ("/fleet/machine/m1", KeyKind.MACHINE, ("m1",)),
        ("/fleet/state/a.service/m1", KeyKind.STATE, ("a.service", "m1")),
        ("/fleet/engine/leader", KeyKind.LEADER, ("leader",)),
    ],
    ids=["job", "unit", "schedule-instance", "machine", "state", "leader"],
)
def test_keys_round_trip(key: str, kind: KeyKind, parts: tuple[str, ...]) -> None:
    parsed = L.parse(key)
    assert parsed is not None and (parsed.kind, parsed.parts) == (kind, parts)


@pytest.mark.parametrize(
    "key",
    [
        "/other/job/a.service",  # another prefix
        "/fleet/jobs/a.service",  # unknown kind
        "/fleet/job/",  # empty name
        "/fleet/job/a/b",  # too many parts
        "/fleet/state/a.service",  # state without machine
        "/fleet/engine/follower",  # not the leader key
    ],
)
def test_foreign_keys_are_ignored(key: str) -> None:
    assert L.parse(key) is None
    assert decode_change(L, Change("put", key, b"{}", 5)) is None


def test_prefix_gets_a_trailing_slash_and_must_be_absolute() -> None:
    assert KeyLayout("/x").job("a") == "/x/job/a"
    with pytest.raises(ValueError, match="start with"):
        KeyLayout("x/")


@pytest.mark.parametrize(
    ("key", "doc", "event"),
    [
        (L.job("a"), Job("a", "h"), JobChanged(7, Job("a", "h"))),
        (L.unit(unit().hash), UnitContent(unit()), UnitStored(7, UnitContent(unit()))),
        (L.schedule("a"), Placement("a", "m"), ScheduleChanged(7, Placement("a", "m"))),
        (L.machine("m"), Machine("m"), MachineUp(7, Machine("m"))),
        (L.state("a", "m"), state("a", "m"), StateChanged(7, state("a", "m"))),
        (L.leader, LeaderInfo("m"), LeaderChanged(7, LeaderInfo("m"))),
    ],
    ids=["job", "unit", "schedule", "machine", "state", "leader"],
)
def test_puts_decode_to_typed_events(key: str, doc, event) -> None:
    assert decode_change(L, Change("put", key, doc.encode(), 7)) == event


@pytest.mark.parametrize(
    ("key", "event"),
    [
        (L.job("a"), JobDeleted(3, "a")),
        (L.unit("h"), UnitDeleted(3, "h")),
        (L.machine("m"), MachineDown(3, "m")),
        (L.state("a", "m"), StateDeleted(3, "a", "m")),
        (L.leader, LeaderChanged(3, None)),
    ],
)
def test_deletes_decode_from_the_key_alone(key: str, event) -> None:
    assert decode_change(L, Change("delete", key, b"", 3)) == event


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (L.job("a"), b"{nope"),  # not JSON
        (L.job("a"), b'{"v": 2, "name": "a", "unit": "h", "desired": "loaded"}'),  # schema
        (L.job("a"), Job("b", "h").encode()),  # the key says a, the document b
        (L.unit("0" * 40), UnitContent(unit()).encode()),  # hash mismatch
        (L.state("a", "m2"), state("a", "m1").encode()),  # machine mismatch
    ],
    ids=["not-json", "schema-version", "name-mismatch", "hash-mismatch", "machine-mismatch"],
)
def test_corrupt_values_raise_model_error(key: str, value: bytes) -> None:
    with pytest.raises(ModelError):
        decode_change(L, Change("put", key, value, 1))


def test_snapshot_apply_folds_events() -> None:
    snap = Snapshot(1)
    snap = snap.apply(JobChanged(2, Job("a", "h")))
    snap = snap.apply(MachineUp(3, Machine("m")))
    snap = snap.apply(StateChanged(4, state("a", "m")))
    assert snap.revision == 4 and set(snap.jobs) == {"a"} and ("a", "m") in snap.states
    snap = snap.apply(MachineDown(5, "m")).apply(StateDeleted(5, "a", "m"))
    assert snap.machines == {} and snap.states == {} and snap.revision == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoints": []}, "at least one endpoint"),
        ({"cert_file": "c.pem"}, "both cert_file and key_file"),
        ({"username": "u"}, "both username and password"),
        ({"request_timeout": 0}, "positive"),
    ],
)
def test_config_is_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EtcdConfig(**kwargs)


def test_config_strips_url_schemes() -> None:
    assert EtcdConfig(["https://127.0.0.1:2379/"]).endpoints == ("127.0.0.1:2379",)
