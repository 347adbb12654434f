"""The per-machine copies the engine leader keeps for the agents: which to write, which to drop.

An agent follows only its own key range (`placed/<machine>/…`: the units placed on it, each
with its job's content hash and desired state) and the Global units' jobs (`global/…`), so it
never reads the rest of the cluster. Those keys are copies of the records (`job/`, `schedule/`):
the engine writes a unit's copy with each placement, and this planner says, for a whole view,
which copies are missing, stale or left over — after a job changed (desired state, content),
a destroy, a unit that became Global or stopped being so, and, once, every copy of a registry
written by a fleetd that kept none (the migration from the previous layout). Pure.

A job whose content is unknown (`specs` lacks it) keeps its copies as they are: whether it is
Global cannot be told, and an agent keeps running what it was told last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.model import Assignment, GlobalJob, Job
from fleetd.reconcile.scheduler import JobSpec
from fleetd.registry.fold import Snapshot

__all__ = ["IndexPlan", "plan_index"]


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """Copies to write and to drop (by key identity)."""

    put: tuple[Assignment, ...] = ()
    drop: tuple[tuple[str, str], ...] = ()  # (machine, name) of `placed/` copies
    put_global: tuple[GlobalJob, ...] = ()
    drop_global: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.put or self.drop or self.put_global or self.drop_global)

    def __len__(self) -> int:
        return len(self.put) + len(self.drop) + len(self.put_global) + len(self.drop_global)


def plan_index(view: Snapshot, specs: Mapping[str, tuple[Job, JobSpec]]) -> IndexPlan:
    """What makes `view`'s copies match its records. `specs`: each job's spec (its content's
    requirements), as the engine's planner keeps them."""
    put: list[Assignment] = []
    drop: list[tuple[str, str]] = []
    for name, machine_id in view.placements.items():
        job = view.jobs.get(name)
        if job is None:
            continue  # a destroy's placement (deleted with the job): the copy goes below
        want = Assignment.of(job, machine_id)
        if view.assignments.get((machine_id, name)) != want:
            put.append(want)
    for machine_id, name in view.assignments:
        if view.placements.get(name) != machine_id and _known(name, view, specs):
            drop.append((machine_id, name))
    put_global: list[GlobalJob] = []
    drop_global: list[str] = []
    for name, job in view.jobs.items():
        entry = specs.get(name)
        if entry is None or entry[0] != job:
            continue  # content unknown (or the spec is of another version): leave it be
        if entry[1].requirements.is_global:
            want_global = GlobalJob.of(job)
            if view.global_jobs.get(name) != want_global:
                put_global.append(want_global)
        elif name in view.global_jobs:
            drop_global.append(name)
    drop_global += [name for name in view.global_jobs if name not in view.jobs]
    return IndexPlan(
        tuple(sorted(put, key=_by_name)),
        tuple(sorted(drop, key=lambda k: (k[1], k[0]))),
        tuple(sorted(put_global, key=_by_name)),
        tuple(sorted(drop_global)),
    )


def _by_name(doc: Assignment | GlobalJob) -> str:
    return doc.name


def _known(name: str, view: Snapshot, specs: Mapping[str, tuple[Job, JobSpec]]) -> bool:
    """Whether a copy of `name` on a machine it is not placed on may go: the job is gone, or
    its content is known (an unknown one may be Global: its copy is the last word it had)."""
    job = view.jobs.get(name)
    return job is None or name in specs
