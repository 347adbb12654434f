"""The key layout, the metadata merge and config checks: pure, no etcd needed (decoding and
folding: test_fold.py)."""

from __future__ import annotations

import pytest

from fleetd.model import (
    DynamicMetadata,
    Machine,
)
from fleetd.registry import (
    ClusterView,
    EtcdConfig,
    KeyLayout,
    effective_machines,
    effective_metadata,
    merge_metadata,
    with_facts,
)
from fleetd.registry.fold import Change, decode_change
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
        "job",
        "unit",
        "schedule-instance",
        "machine",
        "machine-meta",
        "state",
        "restart",
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
        # a fact (fleet.*, registered by its fleetd) is neither overridden nor deleted by a
        # dynamic value written past the API's check (into etcd by hand), nor added by one
        (
            {"role": "web", "fleet.cpus": "2", "fleet.os": "debian"},
            {"fleet.cpus": "64", "fleet.os": "", "fleet.gpu": "1", "role": "db"},
            {"role": "db", "fleet.cpus": "2", "fleet.os": "debian"},
        ),
    ],
    ids=["none", "added", "overridden", "deleted", "facts-kept"],
)
def test_dynamic_metadata_overrides_configured(configured, dynamic, effective) -> None:
    assert merge_metadata(configured, dynamic) == effective


@pytest.mark.parametrize(
    ("configured", "facts", "registered"),
    [
        # the configured metadata and the facts side by side
        ({"role": "web"}, {"fleet.cpus": "2"}, {"role": "web", "fleet.cpus": "2"}),
        # a fleet. key only ever comes from the facts: a configured one (the configuration
        # refuses them) is dropped, whether the facts have it or not
        ({"fleet.cpus": "64", "fleet.gpu": "1"}, {"fleet.cpus": "2"}, {"fleet.cpus": "2"}),
        # and the facts carry nothing else
        ({}, {"role": "db", "fleet.os": "debian"}, {"fleet.os": "debian"}),
    ],
    ids=["merged", "facts-win", "facts-only"],
)
def test_a_machine_registers_its_configured_metadata_with_its_facts(
    configured, facts, registered
) -> None:
    assert with_facts(configured, facts) == registered


def test_effective_metadata_from_a_snapshot_and_a_view_alike() -> None:
    view = ClusterView()
    view.put(KeyKind.MACHINE, "m", Machine("m", "", {"role": "web"}))
    view.put(KeyKind.MACHINE_META, "m", DynamicMetadata("m", {"role": "db"}))
    view.put(KeyKind.MACHINE_META, "gone", DynamicMetadata("gone", {"role": "db"}))
    snap = view.freeze()
    for v in (snap, view):
        assert effective_metadata(v, "m") == {"role": "db"}
        assert effective_machines(v) == {"m": Machine("m", "", {"role": "db"})}
        # a machine not registered (an agent before its first event): its own config, merged
        assert effective_metadata(v, "gone", {"role": "web", "az": "1"}) == {
            "role": "db", "az": "1"}  # fmt: skip
    # the dynamic document deleted: the configured metadata alone again
    view.delete(KeyKind.MACHINE_META, "m")
    assert effective_metadata(view, "m") == {"role": "web"}
    # re-registration (config metadata changed) keeps the dynamic metadata apart
    view.put(KeyKind.MACHINE, "gone", Machine("gone", "", {"role": "web"}))
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
