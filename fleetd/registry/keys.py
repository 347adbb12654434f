"""The etcd key layout, as pure functions: build a key, and tell what a key names.

Under the configurable prefix (default `/fleet/`):

    unit/<sha1>                 UnitContent, content-addressed, shared by jobs
    job/<name>                  Job
    schedule/<name>             Placement (absent = unscheduled)
    placed/<machine-id>/<name>  Assignment: the placement with the job's hash and desired
                                state, where only that machine's agent looks (engine leader)
    global/<name>               Job of a Global unit, copied where every agent looks
                                (engine leader)
    layout/index                IndexMark: the copies above are complete (engine leader)
    machine/<id>                Machine, on the agent's lease
    machine-meta/<id>           DynamicMetadata (API PATCH /machines), no lease: it outlives
                                the machine's registration and overrides its config metadata
    state/<name>/<machine-id>   UnitState, on the publishing agent's lease
    restart/<name>/<machine-id> RestartRequest (API restart), no lease; deleted with the job
    rollout/<name>              Rollout of a Global unit or a template, no lease: the engine
                                leader moves it on, the agents follow it
    cordon/<machine-id>         Cordon (fleetctl cordon/drain), no lease: outlives the machine
    engine/leader               LeaderInfo, on the leader's lease

Unit names and machine IDs never contain `/` (fleet's name rules), so the last segments split
unambiguously.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["COPIES", "DEFAULT_PREFIX", "KeyKind", "KeyLayout", "ParsedKey"]

DEFAULT_PREFIX = "/fleet/"


class KeyKind(StrEnum):
    UNIT = "unit"
    JOB = "job"
    SCHEDULE = "schedule"
    MACHINE = "machine"
    MACHINE_META = "machine-meta"
    STATE = "state"
    RESTART = "restart"
    ROLLOUT = "rollout"
    CORDON = "cordon"
    LEADER = "engine"
    PLACED = "placed"
    GLOBAL = "global"
    LAYOUT = "layout"


# The agents' copies of the records, kept by the engine leader (docs/architecture.md)
COPIES = frozenset((KeyKind.PLACED, KeyKind.GLOBAL, KeyKind.LAYOUT))

# How many segments follow the kind, where not one: per-machine records of a unit.
_PARTS = {KeyKind.STATE: 2, KeyKind.RESTART: 2, KeyKind.PLACED: 2}
_KIND_OF = {kind.value: kind for kind in KeyKind}  # a key's first part → its kind


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """What a key under the prefix names: its kind and its identifying parts."""

    kind: KeyKind
    parts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Keys under one prefix. The prefix always ends with `/`."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ValueError(f"etcd key prefix must start with '/': {self.prefix!r}")
        if not self.prefix.endswith("/"):
            object.__setattr__(self, "prefix", self.prefix + "/")

    def unit(self, unit_hash: str) -> str:
        return f"{self.prefix}unit/{unit_hash}"

    def job(self, name: str) -> str:
        return f"{self.prefix}job/{name}"

    def schedule(self, name: str) -> str:
        return f"{self.prefix}schedule/{name}"

    def machine(self, machine_id: str) -> str:
        return f"{self.prefix}machine/{machine_id}"

    def machine_meta(self, machine_id: str) -> str:
        return f"{self.prefix}machine-meta/{machine_id}"

    def state(self, name: str, machine_id: str) -> str:
        return f"{self.prefix}state/{name}/{machine_id}"

    def states_of(self, name: str) -> str:
        """Prefix of every machine's state of one job."""
        return f"{self.prefix}state/{name}/"

    def restart(self, name: str, machine_id: str) -> str:
        return f"{self.prefix}restart/{name}/{machine_id}"

    def restarts_of(self, name: str) -> str:
        """Prefix of every machine's restart request of one job."""
        return f"{self.prefix}restart/{name}/"

    def rollout(self, name: str) -> str:
        return f"{self.prefix}rollout/{name}"

    def cordon(self, machine_id: str) -> str:
        return f"{self.prefix}cordon/{machine_id}"

    def placed(self, machine_id: str, name: str) -> str:
        return f"{self.prefix}placed/{machine_id}/{name}"

    def placed_on(self, machine_id: str) -> str:
        """Prefix of every unit placed on one machine (its agent's range)."""
        return f"{self.prefix}placed/{machine_id}/"

    def global_job(self, name: str) -> str:
        return f"{self.prefix}global/{name}"

    @property
    def index_mark(self) -> str:
        return f"{self.prefix}layout/index"

    @property
    def leader(self) -> str:
        return f"{self.prefix}engine/leader"

    def of_kind(self, kind: KeyKind) -> str:
        """Prefix of every key of one kind."""
        return f"{self.prefix}{kind.value}/"

    def parse(self, key: str) -> ParsedKey | None:
        """What `key` names, or None for a key outside the layout (ignored by readers)."""
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix) :].split("/")
        kind = _KIND_OF.get(parts[0])
        if kind is None:
            return None
        rest = tuple(parts[1:])
        expected = _PARTS.get(kind, 1)
        if len(rest) != expected or not all(rest):
            return None
        if kind is KeyKind.LEADER and rest != ("leader",):
            return None
        if kind is KeyKind.LAYOUT and rest != ("index",):
            return None
        return ParsedKey(kind, rest)
