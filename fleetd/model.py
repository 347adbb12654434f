"""Plain data shared by every layer, and its JSON form in etcd.

Every stored document is a JSON object carrying `"v"`, the schema version. Decoding checks each
field and raises ModelError naming the document and the field, so a corrupt value is reported
precisely (and skipped by readers) instead of surfacing as a KeyError deep in a shell.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

from fleetd.rules.update import UpdatePolicy
from fleetd.unit import UnitFile, UnitOption, UnitParseError, short_id

SCHEMA_VERSION = 1

__all__ = [
    "BAD_LOAD_STATES",
    "SCHEMA_VERSION",
    "Assignment",
    "Cordon",
    "DrainState",
    "DynamicMetadata",
    "GlobalJob",
    "IndexMark",
    "Job",
    "JobState",
    "LeaderInfo",
    "Machine",
    "ModelError",
    "Phase",
    "Placement",
    "Policy",
    "RestartRequest",
    "Rollout",
    "RolloutAction",
    "RolloutState",
    "Target",
    "UnitContent",
    "UnitState",
    "short_id",
]


class ModelError(ValueError):
    """A stored or received document that does not have the expected shape."""


class JobState(StrEnum):
    """fleet's desired/current unit states, in order of progress."""

    INACTIVE = "inactive"  # known to the cluster, not placed
    LOADED = "loaded"  # placed and loaded into the machine's systemd
    LAUNCHED = "launched"  # started

    @classmethod
    def parse(cls, value: object) -> JobState:
        try:
            return cls(value)
        except ValueError:
            raise ModelError(
                f"invalid value {value!r} for unit state: expected inactive, loaded or launched"
            ) from None


class _Document(ABC):
    """JSON encode/decode with a schema version and field checks; subclasses are dataclasses."""

    __slots__ = ()
    kind: ClassVar[str]

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The document's fields (without the version)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from a decoded JSON object; raise ModelError on a wrong shape."""

    def encode(self) -> bytes:
        return json.dumps(
            {"v": SCHEMA_VERSION, **self.to_dict()}, separators=(",", ":"), sort_keys=True
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Self:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ModelError(f"{cls.kind} document is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise ModelError(f"{cls.kind} document must be a JSON object")
        version = data.get("v")
        if version != SCHEMA_VERSION:
            raise ModelError(
                f"{cls.kind} document has schema version {version!r}, expected {SCHEMA_VERSION}"
            )
        return cls.from_dict(data)

    @classmethod
    def _field(cls, data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
        if name not in data:
            raise ModelError(f"{cls.kind} document lacks field {name!r}")
        value = data[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = (
                kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            )
            raise ModelError(
                f"{cls.kind} document field {name!r} must be {expected}, got {type(value).__name__}"
            )
        return value


def _string_map(kind: str, name: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ModelError(f"{kind} document field {name!r} must map strings to strings")
    return dict(value)


@dataclass(frozen=True, slots=True)
class Job(_Document):
    """A unit the cluster knows: its name, the content it runs, and what the user wants of it."""

    kind: ClassVar[str] = "job"
    name: str
    unit_hash: str
    desired: JobState = JobState.INACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit_hash, "desired": str(self.desired)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        desired = cls._field(data, "desired", str)
        try:
            state = JobState.parse(desired)
        except ModelError as err:
            raise ModelError(f"job document field 'desired': {err}") from None
        return cls(cls._field(data, "name", str), cls._field(data, "unit", str), state)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class UnitContent(_Document):
    """Unit file content, stored once under its hash however many jobs use it."""

    kind: ClassVar[str] = "unit"
    unit: UnitFile

    @property
    def hash(self) -> str:
        return self.unit.hash

    def to_dict(self) -> dict[str, Any]:
        return {"options": [[o.section, o.name, o.value] for o in self.unit.options]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitContent:
        options = cls._field(data, "options", list)
        if not all(
            isinstance(o, list) and len(o) == 3 and all(isinstance(p, str) for p in o)
            for o in options
        ):
            raise ModelError("unit document field 'options' must hold [section, name, value]")
        try:
            return cls(UnitFile.from_options(UnitOption(*o) for o in options))
        except UnitParseError as err:
            raise ModelError(f"unit document holds invalid options: {err}") from None


@dataclass(frozen=True, slots=True)
class Placement(_Document):
    """The engine's decision: this job runs on this machine."""

    kind: ClassVar[str] = "schedule"
    name: str
    machine_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "machine": self.machine_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Placement:
        return cls(cls._field(data, "name", str), cls._field(data, "machine", str))


@dataclass(frozen=True, slots=True)
class Assignment(_Document):
    """What one machine's agent needs of a unit placed on it, under that machine's own key range
    (`placed/<machine>/<name>`): the placement and the job's content hash and desired state,
    kept current by the engine leader. Derived: `schedule/<name>` and `job/<name>` are the
    records; this is their copy where only that machine looks."""

    kind: ClassVar[str] = "placed"
    name: str
    machine_id: str
    unit_hash: str
    desired: JobState

    @classmethod
    def of(cls, job: Job, machine_id: str) -> Assignment:
        return cls(job.name, machine_id, job.unit_hash, job.desired)

    @property
    def job(self) -> Job:
        return Job(self.name, self.unit_hash, self.desired)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "machine": self.machine_id,
            "unit": self.unit_hash,
            "desired": str(self.desired),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Assignment:
        job = Job.from_dict(data)
        return cls(job.name, cls._field(data, "machine", str), job.unit_hash, job.desired)


@dataclass(frozen=True, slots=True)
class GlobalJob(Job):
    """A Global unit's job, copied by the engine leader under `global/<name>`, where every
    agent looks (they follow no other machine's units, and no other job)."""

    kind: ClassVar[str] = "global"

    @classmethod
    def of(cls, job: Job) -> GlobalJob:
        return cls(job.name, job.unit_hash, job.desired)

    @property
    def job(self) -> Job:
        return Job(self.name, self.unit_hash, self.desired)


@dataclass(frozen=True, slots=True)
class IndexMark(_Document):
    """Written once by the engine leader when the per-machine copies (`placed/`, `global/`) are
    complete: agents act on their own key ranges only from then on (`layout/index`)."""

    kind: ClassVar[str] = "layout"
    version: int = 1
    machine_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "machine": self.machine_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexMark:
        return cls(cls._field(data, "version", int), cls._field(data, "machine", str))


@dataclass(frozen=True, slots=True)
class Machine(_Document):
    """A live machine as its agent registered it."""

    kind: ClassVar[str] = "machine"
    id: str
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    version: str = ""

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "public_ip": self.public_ip,
            "metadata": dict(sorted(self.metadata.items())),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Machine:
        return cls(
            cls._field(data, "id", str),
            cls._field(data, "public_ip", str),
            _string_map(cls.kind, "metadata", cls._field(data, "metadata", dict)),
            cls._field(data, "version", str),
        )


@dataclass(frozen=True, slots=True)
class DynamicMetadata(_Document):
    """Metadata set on a machine through the API (PATCH /machines), kept apart from its
    registration: it outlives the machine's lease and overrides its configured metadata. A key
    whose value is "" is deleted, configured or not (fleet's merge rule)."""

    kind: ClassVar[str] = "machine-meta"
    machine_id: str
    values: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine_id, "metadata": dict(sorted(self.values.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DynamicMetadata:
        return cls(
            cls._field(data, "machine", str),
            _string_map(cls.kind, "metadata", cls._field(data, "metadata", dict)),
        )


# systemd LoadStates from which a unit can never start.
BAD_LOAD_STATES = frozenset({"not-found", "bad-setting", "error", "masked"})


@dataclass(frozen=True, slots=True)
class UnitState(_Document):
    """What systemd on one machine says of one unit, as that machine's agent publishes it.

    The last four fields say why a unit is not running, in systemd's words; they are empty
    while there is nothing to say and are left out of the JSON then (older fleetds omit them).
    """

    kind: ClassVar[str] = "state"
    name: str
    machine_id: str
    hash: str
    load: str  # systemd LoadState: loaded, not-found, error, ...
    active: str  # systemd ActiveState: active, inactive, failed, activating, ...
    sub: str  # systemd SubState: running, dead, exited, ...
    result: str = ""  # the unit's Result= once it failed: exit-code, signal, start-limit-hit, ...
    exit: str = ""  # the process that failed: "ExecStart=/bin/false (code=exited, status=1/...)"
    load_error: str = ""  # systemd's LoadError message when LoadState is not "loaded"
    job: str = ""  # result of the agent's last start job when not "done": failed, dependency...
    # the token of the last RestartRequest done here
    restarted: str = ""
    # the health of this instance as judged for a rollout or a drain (`gate`: its id):
    # "checking", "healthy" or "unhealthy" (`health_reason` says why)
    gate: str = ""
    health: str = ""
    health_reason: str = ""

    # optional fields: left out of the JSON when "" (older fleetds omit them)
    _DETAILS: ClassVar[tuple[str, ...]] = (
        "result",
        "exit",
        "load_error",
        "job",
        "restarted",
        "gate",
        "health",
        "health_reason",
    )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "machine": self.machine_id,
            "hash": self.hash,
            "load": self.load,
            "active": self.active,
            "sub": self.sub,
        }
        out.update({f: getattr(self, f) for f in self._DETAILS if getattr(self, f)})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitState:
        details = {f: cls._field(data, f, str) for f in cls._DETAILS if f in data}
        return cls(
            *(
                cls._field(data, f, str)
                for f in ("name", "machine", "hash", "load", "active", "sub")
            ),
            **details,
        )


@dataclass(frozen=True, slots=True)
class RestartRequest(_Document):
    """A user asked to restart a unit on one machine (`restart/<name>/<machine-id>`). The
    machine's agent restarts the unit once per token and publishes the token as done in the
    unit's `UnitState.restarted`; a later request for the same unit and machine replaces it."""

    kind: ClassVar[str] = "restart"
    name: str
    machine_id: str
    token: str  # unique per request

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "machine": self.machine_id, "token": self.token}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RestartRequest:
        token = cls._field(data, "token", str)
        if not token:
            raise ModelError("restart document field 'token' must not be empty")
        return cls(cls._field(data, "name", str), cls._field(data, "machine", str), token)


@dataclass(frozen=True, slots=True)
class LeaderInfo(_Document):
    """Who leads the engines, and which fleetd version it runs."""

    kind: ClassVar[str] = "leader"
    machine_id: str
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine_id, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeaderInfo:
        return cls(cls._field(data, "machine", str), cls._field(data, "version", str))


class Phase(StrEnum):
    """Where one instance of a rollout (or one unit of a drain) stands."""

    PENDING = "pending"  # not touched yet: the old version (or, drained, its old machine)
    UPDATING = "updating"  # told to run the new version (restart, move); health being judged
    HEALTHY = "healthy"  # updated and healthy for the minimum healthy time
    FAILED = "failed"  # not healthy within the deadline (the reason says why)
    REVERTING = "reverting"  # told to run the previous version again
    REVERTED = "reverted"  # back on the previous version, running
    SKIPPED = "skipped"  # nothing to do any more: its machine left, the unit moved or went

    @property
    def touched(self) -> bool:
        """Told to run the new version at some point (what a revert must take back)."""
        return self in (Phase.UPDATING, Phase.HEALTHY, Phase.FAILED)


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # no new instance is touched until `rollout resume`
    CANARY = "canary"  # the canaries are healthy: waiting for `rollout promote`
    REVERTING = "reverting"  # failed (or undone): the touched instances go back
    DONE = "done"  # every instance updated (or skipped)
    # an instance failed and auto-revert is off: stopped where it was, each instance kept on
    # its version until `rollout resume` (tries again) or `rollout undo`
    FAILED = "failed"
    REVERTED = "reverted"  # every touched instance is back on the previous version
    CANCELLED = "cancelled"  # the unit was destroyed or replaced otherwise meanwhile

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({RolloutState.DONE, RolloutState.REVERTED, RolloutState.CANCELLED})


class RolloutAction(StrEnum):
    UPDATE = "update"  # a new version of the unit's content
    RESTART = "restart"  # the same version, restarted instance by instance (health-gated)


@dataclass(frozen=True, slots=True)
class Target:
    """One instance of a rollout: a unit on a machine, and where it stands."""

    unit: str
    machine_id: str
    phase: Phase = Phase.PENDING
    reason: str = ""  # why it failed or was skipped, or what it waits for
    since: float = 0.0  # Unix time it began updating (0: not updating)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "unit": self.unit,
            "machine": self.machine_id,
            "phase": str(self.phase),
        }
        if self.reason:
            out["reason"] = self.reason
        if self.since:
            out["since"] = self.since
        return out

    @classmethod
    def from_dict(cls, kind: str, data: object) -> Target:
        if not isinstance(data, dict):
            raise ModelError(f"{kind} document field 'targets' must hold objects")
        try:
            phase = Phase(data.get("phase"))
        except ValueError:
            raise ModelError(f"{kind} target has an invalid phase {data.get('phase')!r}") from None
        fields = (data.get("unit"), data.get("machine"), data.get("reason", ""))
        if not all(isinstance(f, str) for f in fields):
            raise ModelError(f"{kind} target fields unit, machine and reason must be strings")
        since = data.get("since", 0.0)
        if not isinstance(since, int | float) or isinstance(since, bool):
            raise ModelError(f"{kind} target field since must be a number")
        return cls(data["unit"], data["machine"], phase, data.get("reason", ""), float(since))

    def at(self, phase: Phase, reason: str = "", since: float = 0.0) -> Target:
        return Target(self.unit, self.machine_id, phase, reason, since)


@dataclass(frozen=True, slots=True)
class Policy(UpdatePolicy):
    """The update policy a rollout follows, fixed when it begins: the new version's
    `UpdatePolicy` and its group's `DisruptionBudget` MinAvailable ("" = none)."""

    min_available: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**UpdatePolicy.to_dict(self), "min_available": self.min_available}

    @classmethod
    def from_dict(cls, kind: str, data: object) -> Policy:
        if not isinstance(data, dict):
            raise ModelError(f"{kind} document field 'policy' must be an object")
        try:
            return cls(
                str(data["max_parallel"]),
                float(data["min_healthy"]),
                float(data["deadline"]),
                str(data["health_check"]),
                int(data["canary"]),
                bool(data["auto_revert"]),
                str(data.get("min_available", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{kind} document field 'policy' is invalid: {err}") from None


@dataclass(frozen=True, slots=True)
class Rollout(_Document):
    """A new version of a unit (a Global unit, or every instance of a template) rolled out
    instance by instance, or a health-gated restart (`rollout/<name>`, no lease: it survives
    the engine leader and every fleetd). The engine leader moves it on; the agents run the
    version it says for their machine and report the health of the instances it is judging.

    `name` is the Global unit's or the template's name; `id` is unique per rollout (the health
    reports and restart requests of its instances carry it)."""

    kind: ClassVar[str] = "rollout"
    name: str
    id: str
    action: RolloutAction
    from_hash: str
    to_hash: str
    policy: Policy
    targets: tuple[Target, ...]
    state: RolloutState = RolloutState.RUNNING
    reason: str = ""  # why it failed, was undone or cancelled; what it waits for
    started: float = 0.0  # Unix time it began
    finished: float = 0.0  # Unix time it finished (0 while it runs)
    promoted: bool = False  # its canaries were promoted: the rest follows

    def target(self, unit: str, machine_id: str) -> Target | None:
        return next(
            (t for t in self.targets if t.unit == unit and t.machine_id == machine_id), None
        )

    def hash_for(self, target: Target) -> str:
        """The content `target`'s machine runs for its unit while this rollout is not over."""
        if self.action is RolloutAction.RESTART:
            return self.to_hash
        return self.to_hash if target.phase.touched else self.from_hash

    def counts(self) -> dict[Phase, int]:
        out = dict.fromkeys(Phase, 0)
        for target in self.targets:
            out[target.phase] += 1
        return out

    @property
    def progress(self) -> str:
        """`3/20 updated, 2 in progress, 15 pending` (and failed, reverted when some are)."""
        counts = self.counts()
        total = len(self.targets) - counts[Phase.SKIPPED]
        verb = "restarted" if self.action is RolloutAction.RESTART else "updated"
        parts = [f"{counts[Phase.HEALTHY]}/{total} {verb}"]
        if counts[Phase.UPDATING]:
            parts.append(f"{counts[Phase.UPDATING]} in progress")
        if counts[Phase.PENDING]:
            parts.append(f"{counts[Phase.PENDING]} pending")
        if counts[Phase.FAILED]:
            parts.append(f"{counts[Phase.FAILED]} failed")
        back = counts[Phase.REVERTING] + counts[Phase.REVERTED]
        if back:
            parts.append(f"{counts[Phase.REVERTED]}/{back} reverted")
        if counts[Phase.SKIPPED]:
            parts.append(f"{counts[Phase.SKIPPED]} skipped")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "action": str(self.action),
            "from": self.from_hash,
            "to": self.to_hash,
            "policy": self.policy.to_dict(),
            "targets": [t.to_dict() for t in self.targets],
            "state": str(self.state),
            "reason": self.reason,
            "started": self.started,
            "finished": self.finished,
            "promoted": self.promoted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        try:
            action = RolloutAction(cls._field(data, "action", str))
            state = RolloutState(cls._field(data, "state", str))
        except ValueError as err:
            raise ModelError(f"rollout document: {err}") from None
        return cls(
            cls._field(data, "name", str),
            cls._field(data, "id", str),
            action,
            cls._field(data, "from", str),
            cls._field(data, "to", str),
            Policy.from_dict(cls.kind, cls._field(data, "policy", dict)),
            tuple(Target.from_dict(cls.kind, t) for t in cls._field(data, "targets", list)),
            state,
            cls._field(data, "reason", str),
            float(cls._field(data, "started", (int, float))),
            float(cls._field(data, "finished", (int, float))),
            bool(data.get("promoted", False)),
        )


class DrainState(StrEnum):
    CORDONED = "cordoned"  # no new placements; what runs there stays
    DRAINING = "draining"  # cordoned, its units moving away one at a time
    DRAINED = "drained"  # cordoned, nothing but Global units left (none, with stop_globals)


@dataclass(frozen=True, slots=True)
class Cordon(_Document):
    """A machine that takes no new placements (`cordon/<machine-id>`, no lease: it outlives
    the machine's registration), and the progress of its drain: each target a unit that ran
    there, `machine_id` the machine it moved to ("" until placed)."""

    kind: ClassVar[str] = "cordon"
    machine_id: str
    state: DrainState = DrainState.CORDONED
    id: str = ""  # unique per drain (the health reports on the new machines carry it)
    targets: tuple[Target, ...] = ()
    stop_globals: bool = False  # the drain stops the machine's Global units once it is empty
    reason: str = ""  # what the drain waits for
    since: float = 0.0  # Unix time it was cordoned

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine_id,
            "state": str(self.state),
            "id": self.id,
            "targets": [t.to_dict() for t in self.targets],
            "stop_globals": self.stop_globals,
            "reason": self.reason,
            "since": self.since,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cordon:
        try:
            state = DrainState(cls._field(data, "state", str))
        except ValueError as err:
            raise ModelError(f"cordon document: {err}") from None
        return cls(
            cls._field(data, "machine", str),
            state,
            cls._field(data, "id", str),
            tuple(Target.from_dict(cls.kind, t) for t in cls._field(data, "targets", list)),
            cls._field(data, "stop_globals", bool),
            cls._field(data, "reason", str),
            float(cls._field(data, "since", (int, float))),
        )
