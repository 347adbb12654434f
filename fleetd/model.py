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

from fleetd.unit import UnitFile, UnitOption, UnitParseError, short_id

SCHEMA_VERSION = 1

__all__ = [
    "BAD_LOAD_STATES",
    "SCHEMA_VERSION",
    "DynamicMetadata",
    "Job",
    "JobState",
    "LeaderInfo",
    "Machine",
    "ModelError",
    "Placement",
    "RestartRequest",
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
        return cls(cls._field(data, "name", str), cls._field(data, "unit", str), state)


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

    # optional fields: left out of the JSON when "" (older fleetds omit them)
    _DETAILS: ClassVar[tuple[str, ...]] = ("result", "exit", "load_error", "job", "restarted")

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
