"""fleet's JSON shapes of what the registry holds (`schema/mapper.go`): Unit, UnitState and
Machine, as the listings, the single reads and the event stream show them.

Pure (no I/O): every resource and the event stream build their bodies from a snapshot with these
functions, so the same unit looks the same wherever it is shown, and resources need not import
each other for it.
"""

from __future__ import annotations

from typing import Any

from fleetd.model import Job, Machine, UnitState
from fleetd.reconcile.waiting import current_state
from fleetd.registry import Snapshot, effective_machines

__all__ = ["machine_json", "machines_of", "state_json", "states_of", "unit_json", "units_of"]


# --- units -----------------------------------------------------------------------------------
def unit_json(snapshot: Snapshot, job: Job) -> dict[str, Any] | None:
    """A Unit as fleet's schema has it (empty fields omitted); None when its content is gone."""
    content = snapshot.units.get(job.unit_hash)
    if content is None:
        return None
    out: dict[str, Any] = {
        "name": job.name,
        "options": [
            {"section": o.section, "name": o.name, "value": o.value} for o in content.unit.options
        ],
        "desiredState": job.desired.value,
    }
    current = current_state(snapshot, job)
    if current is not None:
        out["currentState"] = current
    machine_id = snapshot.placements.get(job.name)
    if machine_id is not None:
        out["machineID"] = machine_id
    return out


def units_of(
    snapshot: Snapshot,
    cache: dict[str, tuple[tuple[object, ...], dict[str, Any] | None]] | None = None,
) -> list[dict[str, Any]]:
    """Every unit, sorted by name. With `cache` (kept by the caller across snapshots), a unit
    whose inputs are the very same objects as last time is not computed again."""
    out = []
    for name in sorted(snapshot.jobs):
        job = snapshot.jobs[name]
        machine_id = snapshot.placements.get(name)
        key = (
            job,
            snapshot.units.get(job.unit_hash),
            machine_id,
            snapshot.states.get((name, machine_id)) if machine_id is not None else None,
        )
        known = cache.get(name) if cache is not None else None
        if known is not None and all(a is b for a, b in zip(known[0], key, strict=True)):
            unit = known[1]
        else:
            unit = unit_json(snapshot, job)
            if cache is not None:
                cache[name] = (key, unit)
        if unit is not None:
            out.append(unit)
    if cache is not None and len(cache) > len(snapshot.jobs):
        for name in [n for n in cache if n not in snapshot.jobs]:
            del cache[name]
    return out


# --- unit states -----------------------------------------------------------------------------
def state_json(state: UnitState) -> dict[str, Any]:
    return {
        "name": state.name,
        "hash": state.hash,
        "machineID": state.machine_id,
        "systemdLoadState": state.load,
        "systemdActiveState": state.active,
        "systemdSubState": state.sub,
    }


def states_of(
    snapshot: Snapshot, *, unit_name: str | None = None, machine_id: str | None = None
) -> list[dict[str, Any]]:
    """One state per (unit, machine), sorted by unit name then machine ID, filtered."""
    return [
        state_json(snapshot.states[key])
        for key in sorted(snapshot.states)
        if (unit_name is None or key[0] == unit_name)
        and (machine_id is None or key[1] == machine_id)
    ]


# --- machines --------------------------------------------------------------------------------
def machine_json(machine: Machine) -> dict[str, Any]:
    out: dict[str, Any] = {"id": machine.id}
    if machine.public_ip:
        out["primaryIP"] = machine.public_ip
    if machine.metadata:
        out["metadata"] = dict(sorted(machine.metadata.items()))
    return out


def machines_of(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Every live machine, sorted by ID, with its effective metadata (config + dynamic)."""
    machines = effective_machines(snapshot)
    return [machine_json(machines[m]) for m in sorted(machines)]
