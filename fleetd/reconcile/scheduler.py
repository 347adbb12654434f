"""Where may a job run? One small checker per [X-Fleet] rule, then least-loaded ranking.

Pure: no I/O, no clock. `ClusterState` is the working view the engine planner mutates while it
plans one pass (placing a job changes the load and the neighbours later jobs see).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field

from fleetd.model import JobState, short_id
from fleetd.reconcile.globals import globals_on, runs_globally
from fleetd.unit import SHORT_ID_LENGTH, Requirements

__all__ = ["ClusterState", "JobSpec", "MachineSpec", "Rejection", "place", "reject_reason"]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the scheduler needs of a job: its name, desired state and [X-Fleet] requirements."""

    name: str
    desired: JobState
    requirements: Requirements = field(default_factory=Requirements)

    @property
    def wants_placement(self) -> bool:
        return self.desired is not JobState.INACTIVE and not self.requirements.is_global


@dataclass(frozen=True, slots=True)
class MachineSpec:
    id: str
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def short_id(self) -> str:
        return short_id(self.id)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one machine cannot take one job; `text` says it in words a fleet user understands.

    Checkers run hundreds of thousands of times in a large plan, so they only record the rule
    and its subject; the sentence is made when someone reads it.
    """

    machine_id: str
    rule: str  # MachineID, MachineMetadata, MachineOf, Conflicts, Replaces, Waiting, ...
    subject: object

    @property
    def text(self) -> str:
        s = self.subject
        match self.rule:
            case "MachineID":
                return f"MachineID={s} names another machine"
            case "NoMachineID":
                return f"MachineID={s} names no machine in the cluster"
            case "MachineMetadata":
                assert isinstance(s, Requirements)
                wanted = " ".join(f"{k}={'|'.join(sorted(v))}" for k, v in s.metadata)
                return f"no machine matches MachineMetadata {wanted}"
            case "Waiting":
                return f"waiting for MachineOf={s} to be placed"
            case "MachineOf":
                return f"MachineOf={s} runs on another machine"
            case "Conflicts":
                return f"conflicts with {s}"
            case "Replaces":
                return f"replaced by {s}"
            case _:
                return str(s)


class ClusterState:
    """Machines, jobs and who runs where, with per-machine indexes for fast checks."""

    def __init__(
        self,
        machines: Iterable[MachineSpec],
        jobs: Mapping[str, JobSpec],
        placements: Mapping[str, str],
    ) -> None:
        self.machines: dict[str, MachineSpec] = {m.id: m for m in machines}
        self.jobs = jobs
        self.placements: dict[str, str] = {}
        self.units_on: dict[str, set[str]] = {mid: set() for mid in self.machines}
        # Global jobs each machine runs (where every agent runs them: `globals_on`).
        self.globals_on: dict[str, set[str]] = {mid: set() for mid in self.machines}
        # Neighbours that carry Conflicts or Replaces rules: the only ones whose rules can
        # reject a newcomer, usually few.
        self._ruled_on: dict[str, set[str]] = {mid: set() for mid in self.machines}
        self._load: dict[str, int] = dict.fromkeys(self.machines, 0)
        self._by_short: dict[str, list[str]] = {}
        self._by_metadata: dict[object, list[str]] = {}
        for mid in sorted(self.machines):
            self._by_short.setdefault(short_id(mid), []).append(mid)
        self._place_globals(jobs)
        for name, mid in placements.items():
            if mid in self.machines:
                self._add(name, mid)
        self._heap: list[tuple[int, str]] = [(load, mid) for mid, load in self._load.items()]
        heapq.heapify(self._heap)

    def _place_globals(self, jobs: Mapping[str, JobSpec]) -> None:
        """Where the Global units run, as every agent decides it (`globals_on`): the same on
        machines with the same metadata, so it is worked out once per distinct metadata."""
        candidates = {
            job.name: job.requirements
            for job in jobs.values()
            if runs_globally(job.desired, job.requirements)
        }
        if not candidates:
            return
        by_metadata: dict[frozenset[tuple[str, str]], list[str]] = {}
        for mid, machine in self.machines.items():
            key = frozenset(machine.metadata.items())
            names = by_metadata.get(key)
            if names is None:
                names = by_metadata[key] = globals_on(machine.metadata, candidates)
            for name in names:
                self.globals_on[mid].add(name)
                self._load[mid] += 1
                if _has_rules(candidates[name]):
                    self._ruled_on[mid].add(name)

    # ---- mutation (the planner's working copy)

    def _add(self, name: str, machine_id: str) -> None:
        self.placements[name] = machine_id
        self.units_on[machine_id].add(name)
        self._load[machine_id] += 1
        if _has_rules(self.requirements_of(name)):
            self._ruled_on[machine_id].add(name)

    def assign(self, name: str, machine_id: str) -> None:
        self._add(name, machine_id)
        heapq.heappush(self._heap, (self._load[machine_id], machine_id))

    def unassign(self, name: str) -> None:
        machine_id = self.placements.pop(name)
        self.units_on[machine_id].discard(name)
        self._ruled_on[machine_id].discard(name)
        self._load[machine_id] -= 1
        heapq.heappush(self._heap, (self._load[machine_id], machine_id))

    # ---- queries

    def load(self, machine_id: str) -> int:
        """Units placed on the machine plus the Global units it runs (fleet's measure)."""
        return self._load[machine_id]

    def neighbours(self, machine_id: str) -> Iterable[str]:
        yield from self.units_on[machine_id]
        yield from self.globals_on[machine_id]

    def ruled_neighbours(self, machine_id: str) -> set[str]:
        return self._ruled_on[machine_id]

    def requirements_of(self, name: str) -> Requirements:
        job = self.jobs.get(name)
        return job.requirements if job is not None else _NO_REQUIREMENTS

    def _matching(self, req: Requirements) -> list[str]:
        """Machines whose metadata meets `req` (cached per distinct metadata rule)."""
        found = self._by_metadata.get(req.metadata)
        if found is None:
            found = sorted(
                mid for mid, m in self.machines.items() if req.metadata_matches(m.metadata)
            )
            self._by_metadata[req.metadata] = found
        return found

    def candidates(self, job: JobSpec) -> Iterable[str]:
        """Machine IDs in rank order (least loaded, then ID) worth checking for `job`."""
        req = job.requirements
        rank = self._rank_key
        if req.machine_id:
            ids = [req.machine_id] if req.machine_id in self.machines else []
            if len(req.machine_id) == SHORT_ID_LENGTH:
                ids += self._by_short.get(req.machine_id, [])
            yield from sorted(set(ids), key=rank)
        elif req.machine_of:
            peer_machines = {self.placements.get(p) for p in req.machine_of}
            yield from sorted((m for m in peer_machines if m is not None), key=rank)
        elif req.metadata:
            yield from sorted(self._matching(req), key=rank)
        else:
            yield from self._ranked()

    def _rank_key(self, machine_id: str) -> tuple[int, str]:
        return self._load[machine_id], machine_id

    def _ranked(self) -> Iterable[str]:
        """All machines by (load, ID), lazily: the first feasible one is usually the first."""
        popped: list[tuple[int, str]] = []
        seen: set[str] = set()
        load = self._load
        try:
            while self._heap:
                entry = heapq.heappop(self._heap)
                if entry[1] in seen or entry[0] != load[entry[1]]:
                    continue  # stale entry: the machine's load changed since it was pushed
                seen.add(entry[1])
                popped.append(entry)
                yield entry[1]
        finally:
            for entry in popped:
                if entry[0] == load[entry[1]]:
                    heapq.heappush(self._heap, entry)


_NO_REQUIREMENTS = Requirements()


def _has_rules(req: Requirements) -> bool:
    return bool(req.conflicts or req.replaces)


# ---- checkers: each returns None (fine) or why the machine cannot take the job


def check_machine_id(job: JobSpec, machine_id: str, state: ClusterState) -> Rejection | None:
    req = job.requirements
    if req.machine_id_matches(machine_id):
        return None
    return Rejection(machine_id, "MachineID", req.machine_id)


def check_metadata(job: JobSpec, machine_id: str, state: ClusterState) -> Rejection | None:
    req = job.requirements
    if not req.metadata or req.metadata_matches(state.machines[machine_id].metadata):
        return None
    return Rejection(machine_id, "MachineMetadata", req)


def check_peers(job: JobSpec, machine_id: str, state: ClusterState) -> Rejection | None:
    for peer in job.requirements.machine_of:
        where = state.placements.get(peer)
        if where is None:
            return Rejection(machine_id, "Waiting", peer)
        if where != machine_id:
            return Rejection(machine_id, "MachineOf", peer)
    return None


def check_conflicts(job: JobSpec, machine_id: str, state: ClusterState) -> Rejection | None:
    """Conflicts both ways (fleet honours either side's rule), and Replaces of neighbours."""
    mine = job.requirements
    if mine.conflicts:
        for other in sorted(state.neighbours(machine_id)):
            if other != job.name and mine.conflicts_with(other):
                return Rejection(machine_id, "Conflicts", other)
    for other in sorted(state.ruled_neighbours(machine_id)):
        if other == job.name:
            continue
        theirs = state.requirements_of(other)
        if theirs.conflicts_with(job.name):
            return Rejection(machine_id, "Conflicts", other)
        if theirs.replaces_unit(job.name):
            return Rejection(machine_id, "Replaces", other)
    return None


CHECKERS = (check_machine_id, check_metadata, check_peers, check_conflicts)


def reject_reason(job: JobSpec, machine_id: str, state: ClusterState) -> Rejection | None:
    """The first rule that keeps `job` off `machine_id`, or None if it may run there."""
    for checker in CHECKERS:
        rejection = checker(job, machine_id, state)
        if rejection is not None:
            return rejection
    return None


def place(job: JobSpec, state: ClusterState) -> tuple[str | None, list[Rejection]]:
    """The least-loaded feasible machine for `job` (ties by ID), or None and every rejection."""
    rejections: list[Rejection] = []
    with closing(iter(state.candidates(job))) as candidates:  # puts unused heap entries back
        for machine_id in candidates:
            rejection = reject_reason(job, machine_id, state)
            if rejection is None:
                return machine_id, rejections
            rejections.append(rejection)
    if not rejections:
        rejections.append(_no_candidate(job, state))
    return None, rejections


def _no_candidate(job: JobSpec, state: ClusterState) -> Rejection:
    """Why no machine was even worth checking."""
    req = job.requirements
    if req.machine_id:
        return Rejection("", "NoMachineID", req.machine_id)
    missing = [p for p in req.machine_of if p not in state.placements]
    if missing:
        return Rejection("", "Waiting", missing[0])
    if req.machine_of:
        return Rejection("", "Other", "its MachineOf units run on different machines")
    if req.metadata:
        return Rejection("", "MachineMetadata", req)
    return Rejection("", "Other", "no machine meets its requirements")
