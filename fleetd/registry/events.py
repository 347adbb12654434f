"""Typed registry events and the one-revision snapshot they apply to, decoded purely from keys.

A reader lists everything at one revision (`Snapshot`), then applies the events of
`Registry.watch(snapshot.revision + 1)` in order. `Resync` replaces the whole view (after a
compaction the gap cannot be replayed). Decoding is pure: `decode_change` maps one etcd change to
one event or raises ModelError for a corrupt value, which the caller logs and skips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from fleetd.model import (
    DynamicMetadata,
    Job,
    LeaderInfo,
    Machine,
    ModelError,
    Placement,
    RestartRequest,
    UnitContent,
    UnitState,
)
from fleetd.registry.keys import KeyKind, KeyLayout

__all__ = [
    "Change",
    "ClusterView",
    "Event",
    "JobChanged",
    "JobDeleted",
    "LeaderChanged",
    "MachineDown",
    "MachineUp",
    "MetadataChanged",
    "MetadataDeleted",
    "RestartDeleted",
    "RestartRequested",
    "Resync",
    "ScheduleChanged",
    "ScheduleDeleted",
    "Snapshot",
    "StateChanged",
    "StateDeleted",
    "UnitDeleted",
    "UnitStored",
    "decode_change",
    "decode_value",
    "units_touched",
]


@dataclass(frozen=True, slots=True)
class Change:
    """One etcd key change as the client library reports it, library-neutral."""

    type: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int  # the revision of this change (the key's mod_revision)


def _empty() -> Mapping:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything under the prefix, read at one revision."""

    revision: int
    jobs: Mapping[str, Job] = field(default_factory=_empty)
    units: Mapping[str, UnitContent] = field(default_factory=_empty)  # by hash
    placements: Mapping[str, str] = field(default_factory=_empty)  # job name -> machine ID
    states: Mapping[tuple[str, str], UnitState] = field(default_factory=_empty)  # (name, machine)
    machines: Mapping[str, Machine] = field(default_factory=_empty)
    leader: LeaderInfo | None = None
    # API-set metadata by machine ID (also of machines not registered now): see DynamicMetadata
    dynamic_metadata: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    # restart requests by (name, machine): see RestartRequest
    restarts: Mapping[tuple[str, str], RestartRequest] = field(default_factory=_empty)

    def apply(self, event: Event) -> Snapshot:
        """The snapshot after `event` (a new object; this one is unchanged).

        O(size) per event: readers that follow many events keep a `ClusterView` instead."""
        view = ClusterView(self)
        view.apply(event)
        return view.freeze(copy=False)


@dataclass(frozen=True, slots=True)
class JobChanged:
    revision: int
    job: Job


@dataclass(frozen=True, slots=True)
class JobDeleted:
    revision: int
    name: str


@dataclass(frozen=True, slots=True)
class UnitStored:
    revision: int
    unit: UnitContent


@dataclass(frozen=True, slots=True)
class UnitDeleted:
    revision: int
    hash: str


@dataclass(frozen=True, slots=True)
class ScheduleChanged:
    revision: int
    placement: Placement


@dataclass(frozen=True, slots=True)
class ScheduleDeleted:
    revision: int
    name: str


@dataclass(frozen=True, slots=True)
class MachineUp:
    """A machine registered, or changed its registration (metadata, IP)."""

    revision: int
    machine: Machine


@dataclass(frozen=True, slots=True)
class MachineDown:
    """A machine's key is gone: its lease expired or was revoked."""

    revision: int
    machine_id: str


@dataclass(frozen=True, slots=True)
class MetadataChanged:
    """A machine's dynamic metadata was set (PATCH /machines)."""

    revision: int
    metadata: DynamicMetadata


@dataclass(frozen=True, slots=True)
class MetadataDeleted:
    """A machine's dynamic metadata document was removed: its config metadata applies alone."""

    revision: int
    machine_id: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    revision: int
    state: UnitState


@dataclass(frozen=True, slots=True)
class StateDeleted:
    revision: int
    name: str
    machine_id: str


@dataclass(frozen=True, slots=True)
class RestartRequested:
    """A restart of a unit on one machine was asked for (a new token)."""

    revision: int
    request: RestartRequest


@dataclass(frozen=True, slots=True)
class RestartDeleted:
    """A restart request is gone (its job was destroyed)."""

    revision: int
    name: str
    machine_id: str


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    """A new engine leader, or None when the leader resigned or its lease expired."""

    revision: int
    leader: LeaderInfo | None


@dataclass(frozen=True, slots=True)
class Resync:
    """The watch could not resume (history compacted): replace the whole view by `snapshot`."""

    revision: int
    snapshot: Snapshot


Event = (
    JobChanged
    | JobDeleted
    | UnitStored
    | UnitDeleted
    | ScheduleChanged
    | ScheduleDeleted
    | MachineUp
    | MachineDown
    | MetadataChanged
    | MetadataDeleted
    | StateChanged
    | StateDeleted
    | RestartRequested
    | RestartDeleted
    | LeaderChanged
    | Resync
)


def _check(kind: str, what: str, in_key: str, in_doc: str) -> None:
    if in_key != in_doc:
        raise ModelError(f"{kind} document names {what} {in_doc!r} but its key says {in_key!r}")


def decode_value(
    layout: KeyLayout, key: str, value: bytes
) -> (
    Job
    | UnitContent
    | Placement
    | Machine
    | DynamicMetadata
    | UnitState
    | RestartRequest
    | LeaderInfo
    | None
):
    """The document stored at `key`; None for a key outside the layout; ModelError if corrupt."""
    parsed = layout.parse(key)
    if parsed is None:
        return None
    parts = parsed.parts
    match parsed.kind:
        case KeyKind.UNIT:
            unit = UnitContent.decode(value)
            _check("unit", "hash", parts[0], unit.hash)
            return unit
        case KeyKind.JOB:
            job = Job.decode(value)
            _check("job", "name", parts[0], job.name)
            return job
        case KeyKind.SCHEDULE:
            placement = Placement.decode(value)
            _check("schedule", "name", parts[0], placement.name)
            return placement
        case KeyKind.MACHINE:
            machine = Machine.decode(value)
            _check("machine", "id", parts[0], machine.id)
            return machine
        case KeyKind.MACHINE_META:
            metadata = DynamicMetadata.decode(value)
            _check("machine metadata", "machine", parts[0], metadata.machine_id)
            return metadata
        case KeyKind.STATE:
            state = UnitState.decode(value)
            _check("state", "name", parts[0], state.name)
            _check("state", "machine", parts[1], state.machine_id)
            return state
        case KeyKind.RESTART:
            request = RestartRequest.decode(value)
            _check("restart", "name", parts[0], request.name)
            _check("restart", "machine", parts[1], request.machine_id)
            return request
        case KeyKind.LEADER:
            return LeaderInfo.decode(value)
    return None  # pragma: no cover - every KeyKind is handled


def decode_change(layout: KeyLayout, change: Change) -> Event | None:
    """The typed event for one etcd change; None when the key is not ours; ModelError if corrupt."""
    parsed = layout.parse(change.key)
    if parsed is None:
        return None
    rev, parts = change.revision, parsed.parts
    if change.type == "delete":
        match parsed.kind:
            case KeyKind.UNIT:
                return UnitDeleted(rev, parts[0])
            case KeyKind.JOB:
                return JobDeleted(rev, parts[0])
            case KeyKind.SCHEDULE:
                return ScheduleDeleted(rev, parts[0])
            case KeyKind.MACHINE:
                return MachineDown(rev, parts[0])
            case KeyKind.MACHINE_META:
                return MetadataDeleted(rev, parts[0])
            case KeyKind.STATE:
                return StateDeleted(rev, parts[0], parts[1])
            case KeyKind.RESTART:
                return RestartDeleted(rev, parts[0], parts[1])
            case KeyKind.LEADER:
                return LeaderChanged(rev, None)
        return None  # pragma: no cover
    doc = decode_value(layout, change.key, change.value)
    match doc:
        case Job():
            return JobChanged(rev, doc)
        case UnitContent():
            return UnitStored(rev, doc)
        case Placement():
            return ScheduleChanged(rev, doc)
        case Machine():
            return MachineUp(rev, doc)
        case DynamicMetadata():
            return MetadataChanged(rev, doc)
        case UnitState():
            return StateChanged(rev, doc)
        case RestartRequest():
            return RestartRequested(rev, doc)
        case LeaderInfo():
            return LeaderChanged(rev, doc)
    return None


def units_touched(jobs: Mapping[str, Job], event: Event) -> list[str] | None:
    """The units whose view `event` may change, given the jobs before it; None for "any"
    (a resync, or a machine coming or going: placements and addresses of many units)."""
    match event:
        case JobChanged(job=job):
            return [job.name]
        case JobDeleted(name=name) | ScheduleDeleted(name=name) | StateDeleted(name=name):
            return [name]
        case ScheduleChanged(placement=placement):
            return [placement.name]
        case StateChanged(state=state):
            return [state.name]
        case RestartRequested(request=request):
            return [request.name]
        case RestartDeleted(name=name):
            return [name]
        case UnitStored(unit=content):
            return sorted(n for n, j in jobs.items() if j.unit_hash == content.hash)
        case UnitDeleted(hash=h):
            return sorted(n for n, j in jobs.items() if j.unit_hash == h)
        case Resync() | MachineUp() | MachineDown():
            return None
    return []


def snapshot_from(revision: int, documents: list[object]) -> Snapshot:
    """Build a Snapshot from decoded documents (corrupt ones already dropped by the caller)."""
    jobs: dict[str, Job] = {}
    units: dict[str, UnitContent] = {}
    placements: dict[str, str] = {}
    states: dict[tuple[str, str], UnitState] = {}
    machines: dict[str, Machine] = {}
    dynamic: dict[str, Mapping[str, str]] = {}
    restarts: dict[tuple[str, str], RestartRequest] = {}
    leader: LeaderInfo | None = None
    for doc in documents:
        match doc:
            case Job():
                jobs[doc.name] = doc
            case UnitContent():
                units[doc.hash] = doc
            case Placement():
                placements[doc.name] = doc.machine_id
            case UnitState():
                states[(doc.name, doc.machine_id)] = doc
            case Machine():
                machines[doc.id] = doc
            case DynamicMetadata():
                dynamic[doc.machine_id] = MappingProxyType(dict(doc.values))
            case RestartRequest():
                restarts[(doc.name, doc.machine_id)] = doc
            case LeaderInfo():
                leader = doc
    return Snapshot(
        revision,
        MappingProxyType(jobs),
        MappingProxyType(units),
        MappingProxyType(placements),
        MappingProxyType(states),
        MappingProxyType(machines),
        leader,
        MappingProxyType(dynamic),
        MappingProxyType(restarts),
    )


class ClusterView:
    """A mutable view of the cluster kept current in place from watch events: the one fold of
    registry events (`Snapshot.apply` goes through it too).

    The same fields as `Snapshot` — jobs, unit contents, placements (name → machine ID),
    machines (their dynamic metadata apart: see `effective_metadata`), states, restart
    requests, the leader —
    as dicts updated in O(1) per event, for the engine, the agents and the API's long readers,
    which follow every event of a cluster with thousands of jobs.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.reset(snapshot)

    def reset(self, snapshot: Snapshot) -> None:
        self.revision = snapshot.revision
        self.jobs: dict[str, Job] = dict(snapshot.jobs)
        self.units: dict[str, UnitContent] = dict(snapshot.units)
        self.placements: dict[str, str] = dict(snapshot.placements)
        self.machines: dict[str, Machine] = dict(snapshot.machines)
        self.dynamic_metadata: dict[str, Mapping[str, str]] = dict(snapshot.dynamic_metadata)
        self.states: dict[tuple[str, str], UnitState] = dict(snapshot.states)
        self.restarts: dict[tuple[str, str], RestartRequest] = dict(snapshot.restarts)
        self.leader: LeaderInfo | None = snapshot.leader

    def apply(self, event: Event) -> None:
        """Apply one event in place."""
        self.revision = max(self.revision, event.revision)
        match event:
            case Resync(snapshot=snapshot):
                self.reset(snapshot)
            case JobChanged(job=job):
                self.jobs[job.name] = job
            case JobDeleted(name=name):
                self.jobs.pop(name, None)
            case UnitStored(unit=unit):
                self.units[unit.hash] = unit
            case UnitDeleted(hash=unit_hash):
                self.units.pop(unit_hash, None)
            case ScheduleChanged(placement=placement):
                self.placements[placement.name] = placement.machine_id
            case ScheduleDeleted(name=name):
                self.placements.pop(name, None)
            case MachineUp(machine=machine):
                self.machines[machine.id] = machine
            case MachineDown(machine_id=machine_id):
                self.machines.pop(machine_id, None)
            case MetadataChanged(metadata=metadata):
                self.dynamic_metadata[metadata.machine_id] = metadata.values
            case MetadataDeleted(machine_id=machine_id):
                self.dynamic_metadata.pop(machine_id, None)
            case StateChanged(state=state):
                self.states[state.name, state.machine_id] = state
            case StateDeleted(name=name, machine_id=machine_id):
                self.states.pop((name, machine_id), None)
            case RestartRequested(request=request):
                self.restarts[request.name, request.machine_id] = request
            case RestartDeleted(name=name, machine_id=machine_id):
                self.restarts.pop((name, machine_id), None)
            case LeaderChanged(leader=leader):
                self.leader = leader
            case _:
                raise TypeError(f"not a registry event: {event!r}")

    def freeze(self, *, copy: bool = True) -> Snapshot:
        """This view as a Snapshot (`copy=False`: the view must not be changed afterwards)."""

        def fixed(m: Mapping) -> Mapping:  # type: ignore[type-arg]
            return MappingProxyType(dict(m) if copy else m)

        return Snapshot(
            self.revision,
            fixed(self.jobs),
            fixed(self.units),
            fixed(self.placements),
            fixed(self.states),
            fixed(self.machines),
            self.leader,
            fixed(self.dynamic_metadata),
            fixed(self.restarts),
        )
