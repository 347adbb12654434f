"""The one fold (fleetd/registry/fold.py): decoding, put/delete, snapshots, `touched`. Pure."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from registry_helpers import state, unit

from fleetd.model import (
    Assignment,
    Cordon,
    DynamicMetadata,
    Job,
    JobState,
    LeaderInfo,
    Machine,
    ModelError,
    Placement,
    Policy,
    RestartRequest,
    Rollout,
    RolloutAction,
    Target,
    UnitContent,
)
from fleetd.registry import ClusterView, KeyKind, KeyLayout, Snapshot
from fleetd.registry.fold import (
    KINDS,
    Change,
    Changed,
    DecodedEvents,
    Removed,
    Resync,
    decode_change,
    decode_value,
    snapshot_of,
    touched,
)

L = KeyLayout()
CONTENT = UnitContent(unit())
ROLLOUT = Rollout("a", "r1", RolloutAction.UPDATE, "h1", "h2", Policy(), (Target("a", "m"),))

# (key, document, the ident the view keeps it at, the field, what the field holds)
DOCUMENTS = [
    (L.job("a"), Job("a", "h"), "a", "jobs", Job("a", "h")),
    (L.unit(CONTENT.hash), CONTENT, CONTENT.hash, "units", CONTENT),
    (L.schedule("a"), Placement("a", "m"), "a", "placements", "m"),
    (L.machine("m"), Machine("m"), "m", "machines", Machine("m")),
    (L.machine_meta("m"), DynamicMetadata("m", {"role": "db"}), "m", "dynamic_metadata",
     {"role": "db"}),
    (L.state("a", "m"), state("a", "m"), ("a", "m"), "states", state("a", "m")),
    (L.restart("a", "m"), RestartRequest("a", "m", "t"), ("a", "m"), "restarts",
     RestartRequest("a", "m", "t")),
    (L.rollout("a"), ROLLOUT, "a", "rollouts", ROLLOUT),
    (L.cordon("m"), Cordon("m"), "m", "cordons", Cordon("m")),
    (L.leader, LeaderInfo("m"), "leader", "leaders", LeaderInfo("m")),
]  # fmt: skip
IDS = ["job", "unit", "schedule", "machine", "machine-meta", "state", "restart", "rollout",
       "cordon", "leader"]  # fmt: skip


def test_every_key_kind_has_exactly_one_row() -> None:
    assert sorted(k.key for k in KINDS) == sorted(KeyKind)
    assert len({k.field for k in KINDS}) == len(KINDS)
    assert len({k.doc for k in KINDS}) == len(KINDS)


def test_every_row_is_a_field_of_the_view_and_of_snapshots() -> None:
    view, snap = ClusterView(), Snapshot()
    for kind in KINDS:
        assert getattr(view, kind.field) == {} and getattr(snap, kind.field) == {}


@pytest.mark.parametrize(("key", "doc", "ident", "field", "kept"), DOCUMENTS, ids=IDS)
def test_puts_decode_to_changed_events(key, doc, ident, field, kept) -> None:
    event = decode_change(L, Change("put", key, doc.encode(), 7))
    assert event == Changed(7, L.parse(key).kind, ident, doc)


@pytest.mark.parametrize(("key", "doc", "ident", "field", "kept"), DOCUMENTS, ids=IDS)
def test_deletes_decode_from_the_key_alone(key, doc, ident, field, kept) -> None:
    assert decode_change(L, Change("delete", key, b"", 3)) == Removed(3, L.parse(key).kind, ident)


@pytest.mark.parametrize(("key", "doc", "ident", "field", "kept"), DOCUMENTS, ids=IDS)
def test_a_put_keeps_the_document_at_its_ident(key, doc, ident, field, kept) -> None:
    view = ClusterView()
    assert view.apply(decode_change(L, Change("put", key, doc.encode(), 7))) is True
    assert getattr(view, field) == {ident: kept}
    assert view.revision == 7


@pytest.mark.parametrize(("key", "doc", "ident", "field", "kept"), DOCUMENTS, ids=IDS)
def test_the_same_document_again_changes_nothing(key, doc, ident, field, kept) -> None:
    view = ClusterView()
    view.put_doc(doc)
    again = decode_change(L, Change("put", key, doc.encode(), 8))
    assert view.apply(again) is False
    assert view.revision == 8  # the revision still moves on


@pytest.mark.parametrize(("key", "doc", "ident", "field", "kept"), DOCUMENTS, ids=IDS)
def test_a_delete_forgets_and_says_whether_there_was_anything(key, doc, ident, field, kept) -> None:
    view = ClusterView()
    view.put_doc(doc)
    removed = decode_change(L, Change("delete", key, b"", 9))
    assert view.apply(removed) is True
    assert getattr(view, field) == {}
    assert view.apply(removed) is False  # gone already: nothing changed


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (L.job("a"), b"{nope", "JSON"),
        (L.job("a"), b'{"v": 2, "name": "a", "unit": "h", "desired": "loaded"}', "version"),
        (L.job("a"), Job("b", "h").encode(), "job document names name 'b' but its key says 'a'"),
        (L.unit("0" * 40), CONTENT.encode(), "unit document names hash"),
        (L.state("a", "m2"), state("a", "m1").encode(), "('a', 'm1') but its key says ('a', 'm2')"),
        (L.machine_meta("m2"), DynamicMetadata("m1").encode(), "names machine 'm1'"),
        (L.machine_meta("m"), b'{"v": 1, "machine": "m", "metadata": {"a": 1}}', "metadata"),
        (L.restart("a", "m2"), RestartRequest("a", "m1", "t").encode(), "restart document"),
        (L.restart("b", "m"), RestartRequest("a", "m", "t").encode(), "its key says ('b', 'm')"),
    ],
    ids=["not-json", "schema-version", "name-mismatch", "hash-mismatch", "machine-mismatch",
         "meta-machine-mismatch", "meta-not-string", "restart-machine-mismatch",
         "restart-name-mismatch"],
)  # fmt: skip
def test_corrupt_values_raise_model_error(key: str, value: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_change(L, Change("put", key, value, 1))


@pytest.mark.parametrize(
    "key", ["/other/job/a", "/fleet/jobs/a", "/fleet/state/a", "/fleet/engine/x", "/fleet/job/"]
)
def test_keys_outside_the_layout_decode_to_nothing(key: str) -> None:
    assert decode_change(L, Change("put", key, b"{}", 5)) is None
    assert decode_change(L, Change("delete", key, b"", 5)) is None
    assert decode_value(L, key, b"{}") is None


def test_the_start_up_snapshot_is_the_same_fold_over_an_empty_view() -> None:
    docs = [d for _, d, *_ in DOCUMENTS]
    snap = snapshot_of(42, docs)
    view = ClusterView()
    for revision, doc in enumerate(docs, 1):
        view.apply(Changed(revision, _kind(doc), _ident(doc), doc))
    view.revision = 42
    assert snap == view.freeze()
    assert snap.revision == 42 and snap.leader == LeaderInfo("m")


def test_the_leader_is_one_value_and_none_once_removed() -> None:
    view = ClusterView()
    assert view.leader is None
    view.apply(Changed(2, KeyKind.LEADER, "leader", LeaderInfo("m1", "1.0")))
    assert view.leader == LeaderInfo("m1", "1.0")
    view.apply(Removed(3, KeyKind.LEADER, "leader"))
    assert view.leader is None and view.freeze().leader is None


def test_resync_replaces_the_whole_view() -> None:
    view = ClusterView()
    view.put(KeyKind.JOB, "old", Job("old", "h"))
    view.put(KeyKind.SCHEDULE, "old", Placement("old", "m"))
    fresh = Snapshot(30, jobs={"new": Job("new", "h")})
    assert view.apply(Resync(30, fresh)) is True
    assert view.jobs == {"new": Job("new", "h")} and view.placements == {}
    assert view.revision == 30


def test_a_placement_recorded_before_its_echo_makes_the_echo_a_no_op() -> None:
    """The engine records a won write in its view; the watch's event of it changes nothing."""
    view = ClusterView()
    assert view.put(KeyKind.SCHEDULE, "a", Placement("a", "m1")) is True
    echo = Changed(5, KeyKind.SCHEDULE, "a", Placement("a", "m1"))
    assert view.apply(echo) is False
    moved = Changed(6, KeyKind.SCHEDULE, "a", Placement("a", "m2"))
    assert view.apply(moved) is True and view.placements == {"a": "m2"}


def test_freeze_copies_unless_told_not_to() -> None:
    view = ClusterView()
    view.put(KeyKind.JOB, "a", Job("a", "h"))
    copied, shared = view.freeze(), view.freeze(copy=False)
    view.put(KeyKind.JOB, "b", Job("b", "h"))
    assert set(copied.jobs) == {"a"} and set(shared.jobs) == {"a", "b"}
    with pytest.raises(TypeError):
        copied.jobs["c"] = Job("c", "h")  # type: ignore[index]


def test_a_snapshot_names_only_fields_of_the_table() -> None:
    with pytest.raises(TypeError, match="no field"):
        Snapshot(1, unknown={})


def test_snapshots_compare_by_revision_and_content() -> None:
    a = Snapshot(3, jobs={"a": Job("a", "h")})
    assert a == Snapshot(3, jobs={"a": Job("a", "h")})
    assert a != Snapshot(4, jobs={"a": Job("a", "h")})
    assert a != Snapshot(3, jobs={"a": Job("a", "h2")})


def test_a_view_starts_as_a_copy_of_its_snapshot() -> None:
    snap = Snapshot(5, jobs={"a": Job("a", "h")}, placements={"a": "m"})
    view = ClusterView(snap)
    view.put(KeyKind.JOB, "b", Job("b", "h"))
    assert set(snap.jobs) == {"a"} and view.placements == {"a": "m"} and view.revision == 5


def test_events_of_other_objects_are_refused() -> None:
    with pytest.raises(TypeError, match="not a registry event"):
        ClusterView().apply("job/a")  # type: ignore[arg-type]


# --- touched -----------------------------------------------------------------------------------
def _view_with_jobs() -> ClusterView:
    view = ClusterView()
    view.put(KeyKind.JOB, "a", Job("a", "h1"))
    view.put(KeyKind.JOB, "b", Job("b", "h1"))
    view.put(KeyKind.JOB, "c", Job("c", "h2"))
    return view


@pytest.mark.parametrize(
    ("event", "units"),
    [
        (Changed(1, KeyKind.JOB, "a", Job("a", "h")), {"a"}),
        (Removed(1, KeyKind.JOB, "a"), {"a"}),
        (Changed(1, KeyKind.SCHEDULE, "b", Placement("b", "m")), {"b"}),
        (Removed(1, KeyKind.SCHEDULE, "b"), {"b"}),
        (Changed(1, KeyKind.STATE, ("c", "m"), state("c", "m")), {"c"}),
        (Removed(1, KeyKind.STATE, ("c", "m")), {"c"}),
        (Changed(1, KeyKind.RESTART, ("a", "m"), RestartRequest("a", "m", "t")), {"a"}),
        (Removed(1, KeyKind.RESTART, ("a", "m")), {"a"}),
        (Removed(1, KeyKind.UNIT, "h1"), {"a", "b"}),  # every job using the content
        (Removed(1, KeyKind.UNIT, "h9"), set()),
        (Changed(1, KeyKind.LEADER, "leader", LeaderInfo("m")), set()),
        (Changed(1, KeyKind.MACHINE, "m", Machine("m")), None),  # any: placements may move
        (Removed(1, KeyKind.MACHINE, "m"), None),
        (Changed(1, KeyKind.MACHINE_META, "m", DynamicMetadata("m")), None),
        (Resync(1, Snapshot(1)), None),
    ],
    ids=["job", "job-gone", "schedule", "unschedule", "state", "state-gone", "restart",
         "restart-gone", "content-users", "content-unused", "leader", "machine-up",
         "machine-down", "metadata", "resync"],
)  # fmt: skip
def test_touched_names_the_units_an_event_concerns(event, units) -> None:
    got = touched(_view_with_jobs(), event)
    assert got == (None if units is None else frozenset(units))


# --- a property: folding a sequence equals a snapshot of the end state --------------------------
_names = st.sampled_from(["a", "b", "c"])
_machines = st.sampled_from(["m1", "m2"])
_events = st.one_of(
    st.builds(lambda n, h, d: Changed(0, KeyKind.JOB, n, Job(n, h, d)), _names,
              st.sampled_from(["h1", "h2"]), st.sampled_from(list(JobState))),
    st.builds(lambda n: Removed(0, KeyKind.JOB, n), _names),
    st.builds(lambda n, m: Changed(0, KeyKind.SCHEDULE, n, Placement(n, m)), _names, _machines),
    st.builds(lambda n: Removed(0, KeyKind.SCHEDULE, n), _names),
    st.builds(lambda m: Changed(0, KeyKind.MACHINE, m, Machine(m)), _machines),
    st.builds(lambda m: Removed(0, KeyKind.MACHINE, m), _machines),
    st.builds(lambda n, m: Changed(0, KeyKind.STATE, (n, m), state(n, m)), _names, _machines),
    st.builds(lambda n, m: Removed(0, KeyKind.STATE, (n, m)), _names, _machines),
)  # fmt: skip


@given(st.lists(_events, max_size=30))
def test_folding_events_equals_listing_the_end_state(events) -> None:
    """What a watcher folds is what a later listing reads: the end state's documents."""
    view = ClusterView()
    live: dict[tuple[KeyKind, object], object] = {}
    for revision, event in enumerate(events, 1):
        event = dataclasses.replace(event, revision=revision)
        changed = view.apply(event)
        key = (event.kind, event.ident)
        if isinstance(event, Changed):
            assert changed == (live.get(key) != event.doc)
            live[key] = event.doc
        else:
            assert changed == (key in live)
            live.pop(key, None)
    assert view.freeze() == snapshot_of(len(events), live.values())
    for unit_hash in ("h1", "h2"):  # the index of each content's jobs is what a scan finds
        users = {n for n, j in view.jobs.items() if j.unit_hash == unit_hash}
        assert view.users(unit_hash) == users
        assert touched(view, Removed(0, KeyKind.UNIT, unit_hash)) == users
        assert touched(view.freeze(), Removed(0, KeyKind.UNIT, unit_hash)) == users


def _kind(doc: object) -> KeyKind:
    return next(k.key for k in KINDS if isinstance(doc, k.doc))


def _ident(doc: object) -> object:
    return next(k.ident(doc) for k in KINDS if isinstance(doc, k.doc))


@pytest.mark.parametrize(("key", "doc", "ident", "field", "kept"), DOCUMENTS, ids=IDS)
def test_decoded_events_are_decoded_once_for_every_reader(key, doc, ident, field, kept) -> None:
    """Readers of one process share their decodings: the same change (key, revision, type)
    gives the very same event, equal to `decode_change`'s; another revision is decoded anew."""
    cache = DecodedEvents()
    put = Change("put", key, doc.encode(), 7)
    first = cache.decode(L, put)
    assert first == decode_change(L, put)
    assert cache.decode(L, Change("put", key, doc.encode(), 7)) is first
    assert cache.decode(L, Change("put", key, doc.encode(), 8)) is not first
    gone = cache.decode(L, Change("delete", key, b"", 7))
    assert gone == Removed(7, L.parse(key).kind, ident)


def test_decoded_events_keep_each_readers_skips_and_their_bound() -> None:
    cache = DecodedEvents(size=2)
    copy = Change("put", L.placed("m", "a"), Assignment("a", "m", "h", JobState.LAUNCHED).encode(), 3)
    job = Change("put", L.job("a"), Job("a", "h").encode(), 3)
    assert cache.decode(L, copy, frozenset({KeyKind.PLACED})) is None  # skipped: undecoded
    wanted = cache.decode(L, copy)  # another reader wants it
    assert isinstance(wanted, Changed) and wanted.kind is KeyKind.PLACED
    assert cache.decode(L, copy, frozenset({KeyKind.PLACED})) is None  # still skipped for it
    assert cache.decode(L, Change("put", "/other/x", b"{}", 3)) is None  # not ours, kept so
    cache.decode(L, job)  # the bound: the oldest (the copy) is forgotten
    assert cache.decode(L, copy) is not wanted and cache.decode(L, copy) == wanted
    with pytest.raises(ModelError):  # a corrupt value raises for every reader: never kept
        cache.decode(L, Change("put", L.job("b"), b"not json", 4))
    with pytest.raises(ModelError):
        cache.decode(L, Change("put", L.job("b"), b"not json", 4))
