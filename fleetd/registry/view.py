"""A mutable view of the cluster kept current in place from watch events.

`Snapshot.apply` returns a new snapshot per event, which is right for tests and small readers;
the engine and the agents follow every event of a cluster with thousands of jobs, so they keep
this view instead: one dict update per event.
"""

from __future__ import annotations

from collections.abc import Mapping

from fleetd.model import Job, LeaderInfo, Machine, UnitContent, UnitState
from fleetd.registry.events import (
    Event,
    JobChanged,
    JobDeleted,
    LeaderChanged,
    MachineDown,
    MachineUp,
    MetadataChanged,
    MetadataDeleted,
    Resync,
    ScheduleChanged,
    ScheduleDeleted,
    Snapshot,
    StateChanged,
    StateDeleted,
    UnitDeleted,
    UnitStored,
)

__all__ = ["ClusterView"]


class ClusterView:
    """Jobs, unit contents, placements (name → machine ID), machines (with their dynamic
    metadata apart: see `effective_metadata`), states and the leader."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.reset(snapshot)

    def reset(self, snapshot: Snapshot) -> None:
        self.revision = snapshot.revision
        self.jobs: dict[str, Job] = dict(snapshot.jobs)
        self.units: dict[str, UnitContent] = dict(snapshot.units)
        self.placements: dict[str, str] = {n: p.machine_id for n, p in snapshot.placements.items()}
        self.machines: dict[str, Machine] = dict(snapshot.machines)
        self.dynamic_metadata: dict[str, Mapping[str, str]] = dict(snapshot.dynamic_metadata)
        self.states: dict[tuple[str, str], UnitState] = dict(snapshot.states)
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
            case LeaderChanged(leader=leader):
                self.leader = leader
            case _:
                raise TypeError(f"not a registry event: {event!r}")
