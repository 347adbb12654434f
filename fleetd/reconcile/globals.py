"""Where a Global unit runs: one rule, asked by the scheduler, every agent and the API.

The engine never places a Global unit: each agent runs it where it qualifies. A machine
qualifies when every rule of the unit admits it (`fleetd.rules`: MachineMetadata, Conflicts,
MaxPerMachine, ...) and no rule of a neighbour — Conflicts of a unit already there — keeps it
away. Its neighbours there are the units placed on the machine and the Global units admitted
before it: of two conflicting Global units, the first by name wins.

The scheduler asks with no placed units: its checkers keep a unit off a machine where a Global
unit conflicting with it runs (and move one that is there), so to the scheduler the Global units
are the fixed part of each machine. An agent asks with the units placed on it: until the engine
has moved a conflicting unit away, the placed unit keeps the machine and the Global unit waits,
so the two never run side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

from fleetd.model import Job, JobState, UnitContent
from fleetd.rules import Capacity, Rejection, Term, refusal
from fleetd.rules.resources import capacity_of
from fleetd.unit import Requirements, glob_match

__all__ = ["MachineAlone", "globals_on", "globals_refused", "is_global", "runs_globally"]

_NOTHING: Mapping[str, Requirements] = MappingProxyType({})
_HERE = "."  # the one machine's ID in a MachineAlone: no real ID is a dot


class ContentView(Protocol):
    """A Snapshot or a ClusterView: unit contents by hash."""

    @property
    def units(self) -> Mapping[str, UnitContent]: ...


def is_global(view: ContentView, job: Job) -> bool:
    """Whether `job` is a Global unit; False while its content is not known."""
    content = view.units.get(job.unit_hash)
    return content is not None and content.unit.requirements(job.name).is_global


def runs_globally(desired: JobState, requirements: Requirements) -> bool:
    """A Global unit that should run wherever it qualifies (desired loaded or launched)."""
    return requirements.is_global and desired is not JobState.INACTIVE


class MachineAlone:
    """One machine as the rules see it when only it matters: its metadata and the units on it
    (`fleetd.rules.Placing`)."""

    def __init__(
        self,
        metadata: Mapping[str, str],
        units: Mapping[str, Requirements],
        settled: Collection[str] = (),
    ) -> None:
        self._metadata = metadata
        self._units: dict[str, Requirements] = dict(units)
        self._settled = settled  # the units running here with their current content

    def add(self, name: str, requirements: Requirements) -> None:
        self._units[name] = requirements

    def machine_ids(self) -> Collection[str]:
        return (_HERE,)

    def metadata(self, machine_id: str) -> Mapping[str, str]:
        return self._metadata

    def neighbours(self, machine_id: str) -> Iterable[str]:
        return self._units.keys()

    def placement(self, name: str) -> str | None:
        return _HERE if name in self._units else None

    def count_on(self, machine_id: str, group: str) -> int:
        return sum(glob_match(group, name) for name in self._units)

    def by_short_id(self, short: str) -> Sequence[str]:
        return ()

    def matching(self, key: object, admits: Callable[[Mapping[str, str]], bool]) -> Collection[str]:
        return (_HERE,) if admits(self._metadata) else ()

    def machines_by_value(self, key: str) -> Mapping[str, Collection[str]]:
        return {self._metadata.get(key, ""): (_HERE,)}

    def spread(self, group: str, key: str) -> Mapping[str, int]:
        return {}

    def capacity(self, machine_id: str) -> Capacity:
        return capacity_of(self._metadata)

    def reserved_on(self, machine_id: str) -> tuple[int, float]:
        reserves = [r.reserves for r in self._units.values()]
        return sum(m for m, _ in reserves), sum(c for _, c in reserves)

    def settled(self, name: str, machine_id: str) -> bool:
        return name in self._settled

    def judges_on(self, machine_id: str) -> Sequence[tuple[str, Term]]:
        return [(name, t) for name in sorted(self._units) for t in self._units[name].judges]


def globals_on(
    metadata: Mapping[str, str],
    candidates: Mapping[str, Requirements],
    placed: Mapping[str, Requirements] = _NOTHING,
    running: Collection[str] = (),
) -> list[str]:
    """The Global units a machine runs, by name: of `candidates` (the Global units that should
    run, see `runs_globally`), those every rule admits on a machine with `metadata` and the
    units `placed` there, next to the Global units admitted before them. `running`: the units
    running there with their current content (one is not stopped for room: `fleetd.rules
    .resources`)."""
    return _admitted(metadata, candidates, placed, running)[0]


def globals_refused(
    metadata: Mapping[str, str],
    candidates: Mapping[str, Requirements],
    placed: Mapping[str, Requirements] = _NOTHING,
    running: Collection[str] = (),
) -> dict[str, str]:
    """Why each of `candidates` that the machine does not run (`globals_on`) is kept off it,
    in words: an agent reports them, so a Global unit is never skipped silently."""
    return {name: r.text for name, r in _admitted(metadata, candidates, placed, running)[1].items()}


def _admitted(
    metadata: Mapping[str, str],
    candidates: Mapping[str, Requirements],
    placed: Mapping[str, Requirements],
    running: Collection[str],
) -> tuple[list[str], dict[str, Rejection]]:
    machine = MachineAlone(metadata, placed, running)
    admitted: list[str] = []
    refused: dict[str, Rejection] = {}
    for name in sorted(candidates):
        req = candidates[name]
        rejection = refusal(name, req.terms, _HERE, machine)
        if rejection is None:
            admitted.append(name)
            machine.add(name, req)
        else:
            refused[name] = rejection
    return admitted, refused
