"""The key layout, event decoding and config checks: pure, no etcd needed."""

from __future__ import annotations

import pytest
from registry_helpers import state, unit

from fleetd.model import (
    DynamicMetadata,
    Job,
    LeaderInfo,
    Machine,
    ModelError,
    Placement,
    RestartRequest,
    UnitContent,
)
from fleetd.registry import (
    EtcdConfig,
    JobChanged,
    JobDeleted,
    KeyLayout,
    LeaderChanged,
    MachineDown,
    MachineUp,
    MetadataChanged,
    MetadataDeleted,
    RestartDeleted,
    RestartRequested,
    ScheduleChanged,
    Snapshot,
    StateChanged,
    StateDeleted,
    UnitDeleted,
    UnitStored,
    effective_machines,
    effective_metadata,
    merge_metadata,
)
from fleetd.registry.events import Change, ClusterView, decode_change
from fleetd.registry.keys import KeyKind

L = KeyLayout()


@pytest.mark.parametrize(
    ("key", "kind", "parts"),
    [
        ("/fleet/job/hello.service", KeyKind.JOB, ("hello.service",)),
        ("/fleet/unit/abc", KeyKind.UNIT, ("abc",)),
        ("/fleet/schedule/a@1.service", KeyKind.SCHEDULE, ("a@1.service",)),
        ("/fleet/machine/m1", KeyKind.MACHINE, ("m1",)),
        ("/fleet/machine-meta/m1", KeyKind.MACHINE_META, ("m1",)),
        ("/fleet/state/a.service/m1", KeyKind.STATE, ("a.service", "m1")),
        ("/fleet/restart/a.service/m1", KeyKind.RESTART, ("a.service", "m1")),
        ("/fleet/engine/leader", KeyKind.LEADER, ("leader",)),
    ],
    ids=[
        "job", "unit", "schedule-instance", "machine", "machine-meta", "state", "restart",
        "leader",
    ],
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
        "/fleet/restart/a.service",  # restart request without machine
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
        (L.machine_meta("m"), DynamicMetadata("m", {"role": "db"}),
         MetadataChanged(7, DynamicMetadata("m", {"role": "db"}))),
        (L.state("a", "m"), state("a", "m"), StateChanged(7, state("a", "m"))),
        (L.leader, LeaderInfo("m"), LeaderChanged(7, LeaderInfo("m"))),
        (L.restart("a", "m"), RestartRequest("a", "m", "t"),
         RestartRequested(7, RestartRequest("a", "m", "t"))),
    ],
    ids=["job", "unit", "schedule", "machine", "machine-meta", "state", "leader", "restart"],
)
def test_puts_decode_to_typed_events(key: str, doc, event) -> None:
    assert decode_change(L, Change("put", key, doc.encode(), 7)) == event


@pytest.mark.parametrize(
    ("key", "event"),
    [
        (L.job("a"), JobDeleted(3, "a")),
        (L.unit("h"), UnitDeleted(3, "h")),
        (L.machine("m"), MachineDown(3, "m")),
        (L.machine_meta("m"), MetadataDeleted(3, "m")),
        (L.state("a", "m"), StateDeleted(3, "a", "m")),
        (L.leader, LeaderChanged(3, None)),
        (L.restart("a", "m"), RestartDeleted(3, "a", "m")),
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
        (L.machine_meta("m2"), DynamicMetadata("m1").encode()),  # machine mismatch
        (L.machine_meta("m"), b'{"v": 1, "machine": "m", "metadata": {"a": 1}}'),  # not a string
        (L.restart("a", "m2"), RestartRequest("a", "m1", "t").encode()),  # machine mismatch
        (L.restart("b", "m"), RestartRequest("a", "m", "t").encode()),  # name mismatch
    ],
    ids=["not-json", "schema-version", "name-mismatch", "hash-mismatch", "machine-mismatch",
         "meta-machine-mismatch", "meta-not-string", "restart-machine-mismatch",
         "restart-name-mismatch"],
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
    snap = snap.apply(RestartRequested(6, RestartRequest("a", "m", "t1")))
    assert snap.restarts == {("a", "m"): RestartRequest("a", "m", "t1")}
    snap = snap.apply(RestartRequested(7, RestartRequest("a", "m", "t2")))  # replaces it
    assert snap.restarts[("a", "m")].token == "t2"
    snap = snap.apply(RestartDeleted(8, "a", "m"))
    assert snap.restarts == {} and snap.revision == 8


@pytest.mark.parametrize(
    ("configured", "dynamic", "effective"),
    [
        # no dynamic metadata: the configured metadata as it is
        ({"role": "web"}, None, {"role": "web"}),
        # a dynamic key is added
        ({"role": "web"}, {"disk": "ssd"}, {"role": "web", "disk": "ssd"}),
        # a dynamic value overrides the configured one
        ({"role": "web"}, {"role": "db"}, {"role": "db"}),
        # "" deletes a key, configured or not (fleet's remove)
        ({"role": "web", "az": "1"}, {"role": "", "x": ""}, {"az": "1"}),
    ],
    ids=["none", "added", "overridden", "deleted"],
)
def test_dynamic_metadata_overrides_configured(configured, dynamic, effective) -> None:
    assert merge_metadata(configured, dynamic) == effective


def test_effective_metadata_from_a_snapshot_and_a_view_alike() -> None:
    snap = Snapshot(1).apply(MachineUp(2, Machine("m", "", {"role": "web"})))
    snap = snap.apply(MetadataChanged(3, DynamicMetadata("m", {"role": "db"})))
    snap = snap.apply(MetadataChanged(4, DynamicMetadata("gone", {"role": "db"})))
    view = ClusterView(snap)
    for v in (snap, view):
        assert effective_metadata(v, "m") == {"role": "db"}
        assert effective_machines(v) == {"m": Machine("m", "", {"role": "db"})}
        # a machine not registered (an agent before its first event): its own config, merged
        assert effective_metadata(v, "gone", {"role": "web", "az": "1"}) == {
            "role": "db", "az": "1"}  # fmt: skip
    # the dynamic document deleted: the configured metadata alone again
    snap = snap.apply(MetadataDeleted(5, "m"))
    view.apply(MetadataDeleted(5, "m"))
    assert effective_metadata(snap, "m") == effective_metadata(view, "m") == {"role": "web"}
    # re-registration (config metadata changed) keeps the dynamic metadata apart
    view.apply(MachineUp(6, Machine("gone", "", {"role": "web"})))
    assert effective_metadata(view, "gone") == {"role": "db"}


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
