"""The one fold of the cluster: the table "key kind → document → view field", the view it fills,
and the events that change it. Pure: no etcd, no asyncio.

Every reader — the engine, each agent, the API's waits and event streams, `wait_for`, tests —
keeps a `ClusterView` and folds the registry into it through this module only:

- at start-up, the documents of one `Registry.snapshot()` are put into an empty view
  (`snapshot_of`, `ClusterView.put_doc`);
- then each watch change is decoded (`decode_change`) into a `Changed` or `Removed` event, which
  `ClusterView.apply` folds; `put`/`delete` say whether the view really changed, so a re-put of
  the same document (or the echo of a write the reader already recorded) changes nothing;
- a `Resync` (the watch could not resume after a compaction) replaces the whole view.

Adding a key kind is one row of `KINDS` (and the view's field annotation below it): decoding,
the corrupt-value check, the fold, the frozen `Snapshot` and `touched` all read the table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from fleetd.model import (
    Assignment,
    Cordon,
    DynamicMetadata,
    GlobalJob,
    IndexMark,
    Job,
    LeaderInfo,
    Machine,
    ModelError,
    Placement,
    RestartRequest,
    Rollout,
    UnitContent,
    UnitState,
)
from fleetd.registry.keys import KeyKind, KeyLayout, ParsedKey

__all__ = [
    "KINDS",
    "Change",
    "Changed",
    "ClusterView",
    "DecodedEvents",
    "Event",
    "Kind",
    "Removed",
    "Resync",
    "Snapshot",
    "decode_change",
    "decode_value",
    "snapshot_of",
    "touched",
]

# What identifies a document within its kind: a job's name, a machine's ID, (unit, machine)
# for per-machine kinds — the key's parts after the kind, one part as a plain string.
Ident = str | tuple[str, ...]


def _same(doc: Any) -> Any:
    return doc


@dataclass(frozen=True, slots=True)
class Kind:
    """One row of the fold: where a kind of document lives in the view and what it is about."""

    key: KeyKind
    doc: type[Any]  # the document class stored at such keys (fleetd.model)
    field: str  # the ClusterView/Snapshot attribute: a dict by Ident
    name: str  # how errors name the document's identity ("name", "hash", "id", ...)
    ident: Callable[[Any], Ident]  # the identity a document names (must match its key)
    keep: Callable[[Any], Any] = _same  # what the view keeps of a document
    unit: Callable[[Ident], str] | None = None  # the unit an Ident is about, if any
    machine: Callable[[Ident], str] | None = None  # the machine an Ident is about, if any


def _first(ident: Ident) -> str:
    return ident[0] if isinstance(ident, tuple) else ident


def _second(ident: Ident) -> str:
    assert isinstance(ident, tuple)
    return ident[1]


def _whole(ident: Ident) -> str:
    assert isinstance(ident, str)
    return ident


KINDS: tuple[Kind, ...] = (
    Kind(KeyKind.JOB, Job, "jobs", "name", lambda d: d.name, unit=_whole),
    Kind(KeyKind.UNIT, UnitContent, "units", "hash", lambda d: d.hash),
    Kind(KeyKind.SCHEDULE, Placement, "placements", "name", lambda d: d.name,
         keep=lambda d: d.machine_id, unit=_whole),
    Kind(KeyKind.MACHINE, Machine, "machines", "id", lambda d: d.id, machine=_whole),
    Kind(KeyKind.MACHINE_META, DynamicMetadata, "dynamic_metadata", "machine",
         lambda d: d.machine_id, keep=lambda d: d.values, machine=_whole),
    Kind(KeyKind.STATE, UnitState, "states", "name and machine",
         lambda d: (d.name, d.machine_id), unit=_first, machine=_second),
    Kind(KeyKind.RESTART, RestartRequest, "restarts", "name and machine",
         lambda d: (d.name, d.machine_id), unit=_first, machine=_second),
    Kind(KeyKind.ROLLOUT, Rollout, "rollouts", "name", lambda d: d.name),
    Kind(KeyKind.CORDON, Cordon, "cordons", "machine", lambda d: d.machine_id, machine=_whole),
    Kind(KeyKind.LEADER, LeaderInfo, "leaders", "key", lambda d: "leader"),
    Kind(KeyKind.PLACED, Assignment, "assignments", "machine and name",
         lambda d: (d.machine_id, d.name), unit=_second, machine=_first),
    Kind(KeyKind.GLOBAL, GlobalJob, "global_jobs", "name", lambda d: d.name, unit=_whole),
    Kind(KeyKind.LAYOUT, IndexMark, "marks", "key", lambda d: "index"),
)  # fmt: skip
BY_KEY: Mapping[KeyKind, Kind] = MappingProxyType({k.key: k for k in KINDS})
BY_DOC: Mapping[type, Kind] = MappingProxyType({k.doc: k for k in KINDS})


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    """One etcd key change as the client library reports it, library-neutral."""

    type: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int  # the revision of this change (the key's mod_revision)


@dataclass(frozen=True, slots=True)
class Changed:
    """A document was written: `doc` (a fleetd.model document of `kind`) at `ident`."""

    revision: int
    kind: KeyKind
    ident: Ident
    doc: Any


@dataclass(frozen=True, slots=True)
class Removed:
    """The key of `kind` at `ident` is gone (deleted, or its lease ended)."""

    revision: int
    kind: KeyKind
    ident: Ident


@dataclass(frozen=True, slots=True)
class Resync:
    """The watch could not resume (history compacted): replace the whole view by `snapshot`."""

    revision: int
    snapshot: Snapshot


Event = Changed | Removed | Resync


# --- the view --------------------------------------------------------------------------------
class _Fields:
    """The fields of the cluster's state, one per row of KINDS (see there)."""

    revision: int
    jobs: Mapping[str, Job]
    units: Mapping[str, UnitContent]  # by hash
    placements: Mapping[str, str]  # job name → machine ID
    machines: Mapping[str, Machine]  # registered (their dynamic metadata apart)
    dynamic_metadata: Mapping[str, Mapping[str, str]]  # API-set metadata by machine ID
    states: Mapping[tuple[str, str], UnitState]  # (name, machine)
    restarts: Mapping[tuple[str, str], RestartRequest]  # (name, machine)
    rollouts: Mapping[str, Rollout]  # by the Global unit's or the template's name
    cordons: Mapping[str, Cordon]  # by machine ID
    leaders: Mapping[str, LeaderInfo]  # "leader" → the engine leader, when there is one
    # the per-machine copies the engine leader keeps for the agents (docs/architecture.md)
    assignments: Mapping[tuple[str, str], Assignment]  # (machine, name)
    global_jobs: Mapping[str, GlobalJob]  # the Global units' jobs, by name
    marks: Mapping[str, IndexMark]  # "index" → the copies are complete

    @property
    def leader(self) -> LeaderInfo | None:
        return self.leaders.get("leader")


class Snapshot(_Fields):
    """The cluster at one revision, read-only (a listing, or a frozen ClusterView).

    `Snapshot(revision, jobs={...}, ...)` builds one by hand (tests); fields not given are
    empty."""

    def __init__(self, revision: int = 0, **fields: Mapping[Any, Any]) -> None:
        unknown = set(fields) - {k.field for k in KINDS}
        if unknown:
            raise TypeError(f"Snapshot has no field(s) {sorted(unknown)}")
        self.revision = revision
        for kind in KINDS:
            value = fields.get(kind.field, {})
            setattr(self, kind.field, MappingProxyType(dict(value)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self.revision == other.revision and all(
            getattr(self, k.field) == getattr(other, k.field) for k in KINDS
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k.field}={len(getattr(self, k.field))}" for k in KINDS)
        return f"Snapshot(revision={self.revision}, {sizes})"


class ClusterView(_Fields):
    """The cluster, kept current in place: O(1) per event, for readers that follow every event
    of a cluster with thousands of jobs. Fields as `Snapshot`, as plain dicts."""

    jobs: dict[str, Job]
    units: dict[str, UnitContent]
    placements: dict[str, str]
    machines: dict[str, Machine]
    dynamic_metadata: dict[str, Mapping[str, str]]
    states: dict[tuple[str, str], UnitState]
    restarts: dict[tuple[str, str], RestartRequest]
    leaders: dict[str, LeaderInfo]
    assignments: dict[tuple[str, str], Assignment]
    global_jobs: dict[str, GlobalJob]
    marks: dict[str, IndexMark]

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.reset(snapshot if snapshot is not None else Snapshot())

    def reset(self, snapshot: Snapshot) -> None:
        """Become a copy of `snapshot`."""
        self.revision = snapshot.revision
        for kind in KINDS:
            setattr(self, kind.field, dict(getattr(snapshot, kind.field)))
        # the jobs using each content, kept with `jobs`: which units a content's event concerns
        # is asked for every event a follower folds, and a scan of every job made a bulk
        # submit quadratic
        self._users: dict[str, set[str]] = {}
        for name, job in self.jobs.items():
            self._users.setdefault(job.unit_hash, set()).add(name)

    def users(self, unit_hash: str) -> frozenset[str]:
        """The jobs whose content is `unit_hash`."""
        return frozenset(self._users.get(unit_hash, ()))

    def put(self, kind: KeyKind, ident: Ident, doc: Any) -> bool:
        """Record `doc` at `ident`; returns whether the view changed."""
        row = BY_KEY[kind]
        table: dict[Ident, Any] = getattr(self, row.field)
        value = row.keep(doc)
        old = table.get(ident, _ABSENT)
        if old is value or old == value:
            return False
        table[ident] = value
        if kind is KeyKind.JOB:
            self._forget_user(ident, old)
            self._users.setdefault(value.unit_hash, set()).add(ident)
        return True

    def delete(self, kind: KeyKind, ident: Ident) -> bool:
        """Forget what is at `ident`; returns whether there was anything."""
        table: dict[Ident, Any] = getattr(self, BY_KEY[kind].field)
        old = table.pop(ident, _ABSENT)
        if kind is KeyKind.JOB:
            self._forget_user(ident, old)
        return old is not _ABSENT

    def _forget_user(self, name: Ident, job: Any) -> None:
        if job is _ABSENT:
            return
        users = self._users.get(job.unit_hash)
        if users is not None:
            users.discard(name)  # type: ignore[arg-type]
            if not users:
                del self._users[job.unit_hash]

    def put_doc(self, doc: Any) -> bool:
        """Record a decoded document at the identity it names itself."""
        row = BY_DOC[type(doc)]
        return self.put(row.key, row.ident(doc), doc)

    def apply(self, event: Event) -> bool:
        """Fold one event in place; returns whether the view changed (the revision aside)."""
        match event:
            case Changed(kind=kind, ident=ident, doc=doc):
                changed = self.put(kind, ident, doc)
            case Removed(kind=kind, ident=ident):
                changed = self.delete(kind, ident)
            case Resync(snapshot=snapshot):
                self.reset(snapshot)
                return True
            case _:
                raise TypeError(f"not a registry event: {event!r}")
        self.revision = max(self.revision, event.revision)
        return changed

    def freeze(self, *, copy: bool = True) -> Snapshot:
        """This view as a Snapshot (`copy=False`: the view must not change afterwards)."""
        frozen = Snapshot.__new__(Snapshot)
        frozen.revision = self.revision
        for kind in KINDS:
            table = getattr(self, kind.field)
            setattr(frozen, kind.field, MappingProxyType(dict(table) if copy else table))
        return frozen


_ABSENT = object()


def snapshot_of(revision: int, documents: Iterable[Any]) -> Snapshot:
    """The same fold over an empty view: a Snapshot of decoded documents (corrupt ones already
    dropped by the caller)."""
    view = ClusterView()
    for doc in documents:
        view.put_doc(doc)
    view.revision = revision
    return view.freeze(copy=False)


def touched(view: _Fields, event: Event) -> frozenset[str] | None:
    """The units whose view `event` may change (asked once it changed the view: a content's
    users are the same before and after); None for "any" (a resync, or a machine coming or
    going: placements and addresses of many units)."""
    match event:
        case Resync():
            return None
        case Changed(kind=KeyKind.UNIT, ident=ident) | Removed(kind=KeyKind.UNIT, ident=ident):
            if isinstance(view, ClusterView):
                return view.users(ident)  # type: ignore[arg-type]
            return frozenset(n for n, j in view.jobs.items() if j.unit_hash == ident)
        case Changed(kind=kind, ident=ident) | Removed(kind=kind, ident=ident):
            row = BY_KEY[kind]
            if row.unit is not None:
                return frozenset((row.unit(ident),))
            if row.machine is not None:
                return None
    return frozenset()


# --- decoding --------------------------------------------------------------------------------
def _ident(parts: tuple[str, ...]) -> Ident:
    return parts[0] if len(parts) == 1 else parts


def decode_value(layout: KeyLayout, key: str, value: bytes) -> Any | None:
    """The document stored at `key`; None for a key outside the layout; ModelError if corrupt
    (not JSON, the wrong schema, or a document naming another identity than its key)."""
    parsed = layout.parse(key)
    return None if parsed is None else _document(parsed, value)


def _document(parsed: ParsedKey, value: bytes) -> Any:
    row = BY_KEY[parsed.kind]
    doc = row.doc.decode(value)
    expected = _ident(parsed.parts)
    if row.ident(doc) != expected:
        raise ModelError(
            f"{parsed.kind.value} document names {row.name} {row.ident(doc)!r} "
            f"but its key says {expected!r}"
        )
    return doc


def decode_change(
    layout: KeyLayout, change: Change, skip: frozenset[KeyKind] = frozenset()
) -> Event | None:
    """The event for one etcd change; None when the key is not ours (or of a kind in
    `skip`); ModelError if corrupt. Each key is parsed once: followers decode every event."""
    parsed = layout.parse(change.key)
    if parsed is None or parsed.kind in skip:
        return None
    return _event(parsed, change)


def _event(parsed: ParsedKey, change: Change) -> Event:
    if change.type == "delete":
        return Removed(change.revision, parsed.kind, _ident(parsed.parts))
    return Changed(
        change.revision, parsed.kind, _ident(parsed.parts), _document(parsed, change.value)
    )


_NOT_OURS = object()


class DecodedEvents:
    """The events of one registry's changes, decoded once however many watchers of the
    process get them (the engine leader's whole prefix and its agent's ranges; the waits of
    a bulk command): a change is one key at one revision, so its event is too. Bounded: the
    oldest are forgotten first (a watcher far behind decodes them again)."""

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._events: OrderedDict[tuple[str, int, str], Event | object] = OrderedDict()

    def decode(
        self, layout: KeyLayout, change: Change, skip: frozenset[KeyKind] = frozenset()
    ) -> Event | None:
        """`decode_change`'s answer, from an earlier watcher's decoding when there was one."""
        key = (change.key, change.revision, change.type)
        event = self._events.get(key)
        if event is None:
            parsed = layout.parse(change.key)
            if parsed is None:
                event = _NOT_OURS
            elif parsed.kind in skip:
                return None  # undecoded, as asked (another watcher may want it decoded)
            else:
                event = _event(parsed, change)  # ModelError: the caller's, not kept
            if self._size:
                self._events[key] = event
                if len(self._events) > self._size:
                    self._events.popitem(last=False)
        if event is _NOT_OURS or event.kind in skip:  # type: ignore[union-attr]
            return None
        return event  # type: ignore[return-value]
