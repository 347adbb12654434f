"""Where a Global unit runs: one rule, asked by the scheduler, every agent and the API.

The engine never places a Global unit: each agent runs it where it qualifies. A machine
qualifies when the unit's MachineMetadata matches the machine's and no Conflicts rule — the
Global unit's own or a neighbour's — keeps it away. Its neighbours there are the units placed on
the machine and the Global units admitted before it: of two conflicting Global units, the first
by name wins.

The scheduler asks with no placed units: its checkers keep a unit off a machine where a Global
unit conflicting with it runs (and move one that is there), so to the scheduler the Global units
are the fixed part of each machine. An agent asks with the units placed on it: until the engine
has moved a conflicting unit away, the placed unit keeps the machine and the Global unit waits,
so the two never run side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from fleetd.model import Job, JobState, UnitContent
from fleetd.unit import Requirements

__all__ = ["globals_on", "is_global", "runs_globally"]

_NOTHING: Mapping[str, Requirements] = MappingProxyType({})


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


def globals_on(
    metadata: Mapping[str, str],
    candidates: Mapping[str, Requirements],
    placed: Mapping[str, Requirements] = _NOTHING,
) -> list[str]:
    """The Global units a machine runs, by name: of `candidates` (the Global units that should
    run, see `runs_globally`), those whose MachineMetadata matches `metadata` and that no
    Conflicts rule keeps away from the units `placed` there and the Global units admitted
    before them."""
    neighbours = list(placed)
    ruled = [r for r in placed.values() if r.conflicts]  # the only neighbours that can object
    admitted: list[str] = []
    for name in sorted(candidates):
        req = candidates[name]
        if not req.metadata_matches(metadata):
            continue
        if req.conflicts and any(req.conflicts_with(other) for other in neighbours):
            continue
        if any(rules.conflicts_with(name) for rules in ruled):
            continue
        admitted.append(name)
        neighbours.append(name)
        if req.conflicts:
            ruled.append(req)
    return admitted
