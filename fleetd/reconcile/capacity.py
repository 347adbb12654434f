"""What each machine offers to units and what its units reserve of it, as the scheduler sees it:
`GET /fleet/v1/x/machines`, `fleetctl list-machines` (its resource fields and `-l` columns), the
dashboard's use bars, the per-machine gauges of `/metrics`, and which machines the engine logs
as over-committed.

Pure: from a registry snapshot, numbers (bytes, CPUs). A machine's capacity is read from its
effective metadata by the rules' own `capacity_of` (`fleet.memory`, `fleet.cpus` less what is
held back for the host, `fleet.memory-reserved`, `fleet.cpus-reserved`; `fleet.overcommit`);
what its units reserve is summed by the scheduler's own `ClusterState`, built as the engine
builds it (units placed there, and the Global units it runs), so these numbers are the ones
`MemoryReservation=`/`CPUReservation=` are checked against. A machine is over-committed when its
units reserve more than it offers — after a restart with less memory (a running unit is never
moved for room), or on a machine that allows overcommit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetd.model import Job
from fleetd.reconcile.engine import job_specs, settled
from fleetd.reconcile.scheduler import ClusterState, JobSpec, MachineSpec
from fleetd.registry.fold import Snapshot
from fleetd.registry.metadata import effective_metadata
from fleetd.rules.resources import CPUS_RESERVED, MEMORY_RESERVED, capacity_of
from fleetd.rules.sizes import cpus, size

__all__ = [
    "Amount",
    "ClusterUse",
    "MachineUse",
    "OvercommitChange",
    "cluster_use",
    "overcommit_changes",
    "placed_after",
]

EPSILON = 1e-9  # CPUs add up as floats (as the Reservation rule compares them)
DIGITS = 6  # CPUs are shown rounded to this many decimals (0.1 + 0.2 is 0.3)


@dataclass(frozen=True, slots=True)
class Amount:
    """One resource of one machine: memory in bytes, or CPUs."""

    capacity: float | None  # offered to units: measured less held back (None: not said)
    held: float  # held back for the host (`fleet.memory-reserved`, `fleet.cpus-reserved`)
    reserved: float  # by the units on the machine (placed there, and the Global units it runs)

    @property
    def free(self) -> float | None:
        """What units may still reserve there (never below 0); None when the capacity is not
        known."""
        if self.capacity is None:
            return None
        return round(max(self.capacity - self.reserved, 0), DIGITS)

    @property
    def over(self) -> bool:
        """Its units reserve more than the machine offers."""
        return self.capacity is not None and self.reserved > self.capacity + EPSILON

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "held": self.held,
            "reserved": self.reserved,
            "free": self.free,
        }


@dataclass(frozen=True, slots=True)
class MachineUse:
    """A machine's memory (bytes, ints) and CPUs (floats), and whether it takes units beyond
    them (`fleet.overcommit=true`)."""

    machine: str
    memory: Amount
    cpus: Amount
    overcommit: bool = False

    @property
    def overcommitted(self) -> bool:
        """Its units reserve more memory or CPUs than it offers."""
        return self.memory.over or self.cpus.over

    @property
    def known(self) -> bool:
        """The machine says what it offers (memory or CPUs)."""
        return self.memory.capacity is not None or self.cpus.capacity is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory.to_dict(),
            "cpus": self.cpus.to_dict(),
            "overcommit": self.overcommit,
            "overcommitted": self.overcommitted,
        }


@dataclass(frozen=True, slots=True)
class ClusterUse:
    """Every machine's use, and how many units reserve something (memory or CPUs) at all."""

    machines: Mapping[str, MachineUse]
    reserving: int

    def to_dict(self) -> dict[str, Any]:
        """`GET /fleet/v1/x/machines`'s answer (docs/api.md)."""
        return {
            "machines": {mid: self.machines[mid].to_dict() for mid in sorted(self.machines)},
            "reservingUnits": self.reserving,
        }


def cluster_use(
    snapshot: Snapshot,
    cache: dict[str, tuple[Job, JobSpec]] | None = None,
    *,
    only: Collection[str] | None = None,
    placements: Mapping[str, str] | None = None,
) -> ClusterUse:
    """Each live machine's use (or only those of `only`) as the registry stands in `snapshot`,
    with the `placements` given instead of the snapshot's (the engine's, once its writes are
    won). `cache`: `job_specs`'s, kept by a caller that asks again."""
    specs = job_specs(snapshot.jobs, snapshot.units, cache)
    reserving = sum(spec.requirements.reserves != (0, 0.0) for spec in specs.values())
    ids = sorted(snapshot.machines if only is None else set(only) & set(snapshot.machines))
    machines = [MachineSpec(mid, effective_metadata(snapshot, mid)) for mid in ids]
    state = None
    if reserving:  # else nothing is reserved anywhere: no need to place the Global units
        # settled: a Global unit running on a machine that shrank still counts there
        state = ClusterState(
            machines,
            specs,
            snapshot.placements if placements is None else placements,
            settled(snapshot),
        )
    out = {}
    for machine in machines:
        memory, count = state.reserved_on(machine.id) if state is not None else (0, 0.0)
        out[machine.id] = _use(machine, memory, count)
    return ClusterUse(out, reserving)


def _use(machine: MachineSpec, memory: int, count: float) -> MachineUse:
    capacity = capacity_of(machine.metadata)
    held_memory = size(machine.metadata.get(MEMORY_RESERVED, "")) or 0
    held_cpus = cpus(machine.metadata.get(CPUS_RESERVED, "")) or 0.0
    return MachineUse(
        machine.id,
        Amount(capacity.memory, held_memory, memory),
        Amount(_round(capacity.cpus), round(held_cpus, DIGITS), round(count, DIGITS)),
        capacity.overcommit,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def placed_after(
    placements: Mapping[str, str], moves: Iterable[tuple[str, str | None]]
) -> dict[str, str]:
    """`placements` once each (unit, machine) move is done (None: unplaced)."""
    out = dict(placements)
    for name, machine_id in moves:
        if machine_id is None:
            out.pop(name, None)
        else:
            out[name] = machine_id
    return out


# ---- the engine's log of over-committed machines --------------------------------------------


@dataclass(frozen=True, slots=True)
class OvercommitChange:
    """A machine that became over-committed (`overcommitted`), or stopped being so — its units
    reserve no more than it offers now, or it left the cluster (`gone`)."""

    use: MachineUse
    overcommitted: bool
    gone: bool = False


def overcommit_changes(
    before: Mapping[str, MachineUse], now: ClusterUse
) -> tuple[dict[str, MachineUse], list[OvercommitChange]]:
    """The machines over-committed now (by ID), and the changes since `before` (the machines
    over-committed then), by machine ID: each machine is told once when it becomes so and once
    when it stops."""
    over = {mid: use for mid, use in now.machines.items() if use.overcommitted}
    changes = []
    for mid in sorted(set(before) | set(over)):
        if mid in over and mid not in before:
            changes.append(OvercommitChange(over[mid], True))
        elif mid in before and mid not in over:
            current = now.machines.get(mid)
            if current is None:
                changes.append(OvercommitChange(before[mid], False, gone=True))
            else:
                changes.append(OvercommitChange(current, False))
    return over, changes
