"""Where may a job run? The rules of `fleetd.rules` asked per machine, then a ranking: least
loaded (fleet's), or a ranking rule's tiers (Spread) first.

Pure: no I/O, no clock. `ClusterState` is the working view the engine planner mutates while it
plans one pass (placing a job changes the load and the neighbours later jobs see); it is the
`fleetd.rules.Placing` every rule reads.

A cordoned machine (`MachineSpec.cordoned`: fleetctl cordon or drain) takes no new unit:
`place` refuses it before asking any rule (`RejectReason.CORDONED`, "machine is cordoned"),
while `reject_reason` — what the planner asks of units already placed — never does, so the
units there stay.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from fleetd.model import JobState, short_id
from fleetd.reconcile.fit import FitIndex
from fleetd.reconcile.globals import globals_on, runs_globally
from fleetd.rules import (
    Capacity,
    Rejection,
    RejectReason,
    Requirements,
    Term,
    glob_match,
    refusal,
    refusals,
)
from fleetd.rules.resources import capacity_of

__all__ = [
    "ClusterState",
    "JobSpec",
    "MachineSpec",
    "Rejection",
    "Strategy",
    "every_refusal",
    "place",
    "reject_reason",
]


class Strategy(StrEnum):
    """How machines that fit a unit with reservations are ranked (fleet.conf `scheduler`).
    Units that reserve nothing are always placed least loaded first, as fleet placed them."""

    LEASTLOADED = "leastloaded"  # fleet's: fewest units first
    BINPACK = "binpack"  # fill the largest machines first, largest units first: fewest machines
    SPREAD = "spread"  # emptiest first: the most free capacity


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
    cordoned: bool = False  # takes no new unit (fleetctl cordon/drain); keeps its units

    @property
    def short_id(self) -> str:
        return short_id(self.id)


K = TypeVar("K", bound=Any)  # a heap's sort key
_NO_REQUIREMENTS = Requirements()
_MEMORY, _CPU = 0, 1  # the dimensions of `Requirements.reserves`
_CPU_SCALE = 100  # CPUs are filed by room in hundredths of a CPU
_UNBOUNDED = float(1 << 62)  # the room of a machine that allows overcommit
_ANYWHERE = Term()  # the subject of refusals no rule made ("no machine meets ...")
_NO_JUDGES: Sequence[tuple[str, Term]] = ()


@dataclass(frozen=True, slots=True)
class _Cordon(Term):
    """The refusal of a cordoned machine: not a rule of the unit, the operator's word."""

    rule: ClassVar[str] = "cordoned"

    def text(self, rejection: Rejection) -> str:
        return "machine is cordoned"

    def detail(self, rejection: Rejection) -> str:
        return "machine is cordoned: it takes no new units until fleetctl uncordon"


_CORDON = _Cordon()
# Up to this many candidates are sorted by load; more are taken from the load heap in order.
_FEW = 16


class ClusterState:
    """Machines, jobs and who runs where, with per-machine indexes for fast checks."""

    def __init__(
        self,
        machines: Iterable[MachineSpec],
        jobs: Mapping[str, JobSpec],
        placements: Mapping[str, str],
        settled: Collection[tuple[str, str]] = (),
        strategy: Strategy = Strategy.LEASTLOADED,
    ) -> None:
        self.machines: dict[str, MachineSpec] = {m.id: m for m in machines}
        self.cordoned = frozenset(mid for mid, m in self.machines.items() if m.cordoned)
        self.strategy = strategy
        self.jobs = jobs
        self._settled = settled  # (job, machine): running there with its content
        self.placements: dict[str, str] = {}
        self.units_on: dict[str, set[str]] = {mid: set() for mid in self.machines}
        # Global jobs each machine runs (where every agent runs them: `globals_on`).
        self.globals_on: dict[str, set[str]] = {mid: set() for mid in self.machines}
        # Neighbours whose rules may refuse a newcomer (Conflicts, Replaces): usually few.
        self._ruled_on: dict[str, set[str]] = {mid: set() for mid in self.machines}
        self._load: dict[str, int] = dict.fromkeys(self.machines, 0)
        self._by_short: dict[str, list[str]] = {}
        self._matching: dict[object, frozenset[str]] = {}
        # Counts kept only for the groups and keys some rule asked about in this plan.
        self._groups: dict[str, Counter[str]] = {}  # group glob -> units per machine
        self._spreads: dict[tuple[str, str], Counter[str]] = {}  # (glob, key) -> per value
        self._by_value: dict[str, dict[str, frozenset[str]]] = {}  # key -> value -> machines
        # Memory (bytes) and CPUs reserved on each machine by the units there, and what it offers.
        self._reserved: dict[str, tuple[int, float]] = dict.fromkeys(self.machines, (0, 0.0))
        self._capacity: dict[str, Capacity] = {}
        for mid in sorted(self.machines):
            self._by_short.setdefault(short_id(mid), []).append(mid)
        self._place_globals(jobs)
        for name, mid in placements.items():
            if mid in self.machines:
                self._add(name, mid)
        self._heap: list[tuple[int, str]] = [(load, mid) for mid, load in self._load.items()]
        heapq.heapify(self._heap)
        # The same for the large candidate sets rules narrowed to (MachineMetadata), by set.
        self._heaps: dict[frozenset[str], list[tuple[int, str]]] = {}
        # Machines by free memory and free CPU (for units with reservations), made when asked.
        self._fits: dict[int, FitIndex] = {}

    def _place_globals(self, jobs: Mapping[str, JobSpec]) -> None:
        """Where the Global units run, as every agent decides it (`globals_on`): the same on
        machines with the same metadata (and the same of them running), so it is worked out
        once per distinct metadata."""
        candidates = {
            job.name: job.requirements
            for job in jobs.values()
            if runs_globally(job.desired, job.requirements)
        }
        if not candidates:
            return
        by_metadata: dict[tuple[frozenset[tuple[str, str]], frozenset[str]], list[str]] = {}
        for mid, machine in self.machines.items():
            # those running there with their content are not stopped for room
            running = frozenset(n for n in candidates if (n, mid) in self._settled)
            key = frozenset(machine.metadata.items()), running
            names = by_metadata.get(key)
            if names is None:
                names = by_metadata[key] = globals_on(machine.metadata, candidates, {}, running)
            for name in names:
                self.globals_on[mid].add(name)
                self._load[mid] += 1
                if candidates[name].judges:
                    self._ruled_on[mid].add(name)
                self._reserve(mid, candidates[name].reserves, 1)

    # ---- mutation (the planner's working copy)

    def _add(self, name: str, machine_id: str) -> None:
        self.placements[name] = machine_id
        self.units_on[machine_id].add(name)
        self._load[machine_id] += 1
        requirements = self.requirements_of(name)
        if requirements.judges:
            self._ruled_on[machine_id].add(name)
        self._reserve(machine_id, requirements.reserves, 1)
        self._count(name, machine_id, 1)

    def assign(self, name: str, machine_id: str) -> None:
        self._add(name, machine_id)
        self._reload(machine_id)

    def unassign(self, name: str) -> None:
        machine_id = self.placements.pop(name)
        self.units_on[machine_id].discard(name)
        self._ruled_on[machine_id].discard(name)
        self._load[machine_id] -= 1
        self._reserve(machine_id, self.requirements_of(name).reserves, -1)
        self._count(name, machine_id, -1)
        self._reload(machine_id)

    def _reserve(self, machine_id: str, reserves: tuple[int, float], sign: int) -> None:
        if reserves != (0, 0.0):
            memory, cpus = self._reserved[machine_id]
            self._reserved[machine_id] = (memory + sign * reserves[0], cpus + sign * reserves[1])

    def _reload(self, machine_id: str) -> None:
        """The machine's new load into every heap that holds it (older entries go stale)."""
        entry = (self._load[machine_id], machine_id)
        heapq.heappush(self._heap, entry)
        for ids, heap in self._heaps.items():
            if machine_id in ids:
                heapq.heappush(heap, entry)
        for fit in self._fits.values():
            fit.moved(machine_id)

    def _count(self, name: str, machine_id: str, delta: int) -> None:
        for group, per_machine in self._groups.items():
            if glob_match(group, name):
                per_machine[machine_id] += delta
        for (group, key), per_value in self._spreads.items():
            if glob_match(group, name):
                per_value[self.metadata(machine_id).get(key, "")] += delta

    # ---- what rules read (fleetd.rules.Placing)

    def machine_ids(self) -> Collection[str]:
        return self.machines.keys()

    def metadata(self, machine_id: str) -> Mapping[str, str]:
        return self.machines[machine_id].metadata

    def neighbours(self, machine_id: str) -> Iterable[str]:
        yield from self.units_on[machine_id]
        yield from self.globals_on[machine_id]

    def placement(self, name: str) -> str | None:
        return self.placements.get(name)

    def requirements_of(self, name: str) -> Requirements:
        job = self.jobs.get(name)
        return job.requirements if job is not None else _NO_REQUIREMENTS

    def count_on(self, machine_id: str, group: str) -> int:
        per_machine = self._groups.get(group)
        if per_machine is None:
            per_machine = self._groups[group] = Counter()
            for mid in self.machines:
                per_machine[mid] = sum(glob_match(group, n) for n in self.neighbours(mid))
        return per_machine[machine_id]

    def by_short_id(self, short: str) -> Sequence[str]:
        return self._by_short.get(short, [])

    def matching(self, key: object, admits: Callable[[Mapping[str, str]], bool]) -> frozenset[str]:
        found = self._matching.get(key)
        if found is None:
            found = self._matching[key] = frozenset(
                mid for mid, m in self.machines.items() if admits(m.metadata)
            )
        return found

    def machines_by_value(self, key: str) -> Mapping[str, frozenset[str]]:
        found = self._by_value.get(key)
        if found is None:
            sets: dict[str, set[str]] = {}
            for mid, machine in self.machines.items():
                sets.setdefault(machine.metadata.get(key, ""), set()).add(mid)
            found = self._by_value[key] = {v: frozenset(ids) for v, ids in sets.items()}
        return found

    def spread(self, group: str, key: str) -> Mapping[str, int]:
        per_value = self._spreads.get((group, key))
        if per_value is None:
            per_value = self._spreads[(group, key)] = Counter()
            for mid in self.machines:
                value = self.metadata(mid).get(key, "")
                per_value[value] += sum(glob_match(group, n) for n in self.neighbours(mid))
        return per_value

    def capacity(self, machine_id: str) -> Capacity:
        found = self._capacity.get(machine_id)
        if found is None:
            found = self._capacity[machine_id] = capacity_of(self.metadata(machine_id))
        return found

    def reserved_on(self, machine_id: str) -> tuple[int, float]:
        return self._reserved[machine_id]

    def settled(self, name: str, machine_id: str) -> bool:
        return (name, machine_id) in self._settled

    def judges_on(self, machine_id: str) -> Sequence[tuple[str, Term]]:
        ruled = self._ruled_on[machine_id]
        if not ruled:
            return _NO_JUDGES
        return [
            (owner, term) for owner in sorted(ruled) for term in self.requirements_of(owner).judges
        ]

    def load(self, machine_id: str) -> int:
        """Units placed on the machine plus the Global units it runs (fleet's measure)."""
        return self._load[machine_id]

    # ---- which machines to ask, in which order

    def candidates(self, job: JobSpec) -> Iterable[str]:
        """Machine IDs in rank order worth checking for `job`: those of the first rule that
        narrows them, or every machine; least loaded first, ties by ID. A unit with
        reservations is offered only machines with room for it (`fleetd.reconcile.fit`), in
        the strategy's order (`_fit_key`)."""
        reserves = job.requirements.reserves
        reserving = reserves != (0, 0.0)
        dimension = _MEMORY if reserves[0] else _CPU  # the one a reserving unit is ranked by
        for term in job.requirements.terms:
            ids = term.candidates(job.name, self)
            if ids is not None:
                if reserving:
                    yield from sorted(ids, key=lambda m: self._fit_key(dimension, m))
                else:
                    yield from self.ordered(ids)
                return
        if reserving:
            yield from self._fit(dimension).offered((reserves[0], reserves[1] * _CPU_SCALE))
        else:
            yield from self._ranked(self._heap, self._load.__getitem__)

    def room(self, dimension: int, machine_id: str) -> float | None:
        """Free memory (bytes) or CPUs on the machine; None if it does not say what it offers;
        without bound if it allows overcommit."""
        capacity = self.capacity(machine_id)
        if capacity.overcommit:
            return _UNBOUNDED
        offered = capacity.memory if dimension == _MEMORY else capacity.cpus
        if offered is None:
            return None
        return offered - self._reserved[machine_id][dimension]

    def _fit_key(self, dimension: int, machine_id: str) -> tuple[Any, ...]:
        """The order machines with room are offered in: least loaded (fleet's); under binpack
        the largest machines first, always in the same order, so each is filled before the
        next is opened (first fit, with the largest units placed first: first-fit
        decreasing); under spread the most free room of the unit's first dimension first."""
        if self.strategy is Strategy.LEASTLOADED:
            return self._load[machine_id], machine_id
        if self.strategy is Strategy.BINPACK:
            capacity = self.capacity(machine_id)
            return -(capacity.memory or 0), -(capacity.cpus or 0.0), machine_id
        room = self.room(dimension, machine_id)
        return -(-1.0 if room is None else room), self._load[machine_id], machine_id

    def _fit(self, dimension: int) -> FitIndex:
        """The machines by room, ordered by the room of `dimension` (the unit's first)."""
        fit = self._fits.get(dimension)
        if fit is None:

            def room(machine_id: str) -> tuple[float, float] | None:
                memory, cpus = self.room(_MEMORY, machine_id), self.room(_CPU, machine_id)
                if memory is None and cpus is None:
                    return None  # it says nothing of what it offers: no room for a reservation
                return (memory or 0.0), (cpus or 0.0) * _CPU_SCALE  # CPUs in hundredths

            fit = self._fits[dimension] = FitIndex(
                self.machines, room, lambda m: self._fit_key(dimension, m)
            )
        return fit

    def ordered(self, ids: Collection[str]) -> Iterable[str]:
        """`ids` in rank order, lazily."""
        if len(ids) <= _FEW or not isinstance(ids, frozenset):
            yield from sorted(ids, key=self.rank_key)
            return
        # many, and asked again by the next job with the same rule: a heap of them
        heap = self._heaps.get(ids)
        if heap is None:
            heap = self._heaps[ids] = [(self._load[mid], mid) for mid in ids]
            heapq.heapify(heap)
        yield from self._ranked(heap, self._load.__getitem__)

    def nothing_left(self, job: JobSpec) -> Rejection:
        """Why `candidates` gave no machine at all."""
        for term in job.requirements.terms:
            if term.candidates(job.name, self) is not None:
                return term.nothing_left(job.name, self)
        return Rejection("", RejectReason.OTHER, _ANYWHERE, "no machine meets its requirements")

    def rank_key(self, machine_id: str) -> tuple[int, str]:
        return self._load[machine_id], machine_id

    def _ranked(self, heap: list[tuple[K, str]], key: Callable[[str], K]) -> Iterable[str]:
        """The heap's machines by (key, ID), lazily: the first feasible one is usually the
        first. An entry whose key is no longer the machine's is stale (a newer one was pushed
        when it changed)."""
        popped: list[tuple[K, str]] = []
        seen: set[str] = set()
        try:
            while heap:
                entry = heapq.heappop(heap)
                if entry[1] in seen or entry[0] != key(entry[1]):
                    continue
                seen.add(entry[1])
                popped.append(entry)
                yield entry[1]
        finally:
            for entry in popped:
                if entry[0] == key(entry[1]):
                    heapq.heappush(heap, entry)


def reject_reason(job: JobSpec, machine_id: str, state: ClusterState) -> Rejection | None:
    """The first rule that keeps `job` off `machine_id`, or None if it may run there."""
    return refusal(job.name, job.requirements.terms, machine_id, state)


def every_refusal(job: JobSpec, machine_id: str, state: ClusterState) -> list[Rejection]:
    """Every rule that keeps `job` off `machine_id` (for telling a user why), the machine's
    cordon first."""
    found = refusals(job.name, job.requirements.terms, machine_id, state)
    if machine_id in state.cordoned:
        found.insert(0, _cordoned(machine_id))
    return found


def _cordoned(machine_id: str) -> Rejection:
    return Rejection(machine_id, RejectReason.CORDONED, _CORDON)


def _placing_refusal(job: JobSpec, machine_id: str, state: ClusterState) -> Rejection | None:
    """Why `machine_id` cannot take `job` as a new unit: cordoned, or `reject_reason`."""
    if state.cordoned and machine_id in state.cordoned:
        return _cordoned(machine_id)
    return reject_reason(job, machine_id, state)


def place(job: JobSpec, state: ClusterState) -> tuple[str | None, list[Rejection]]:
    """The least-loaded feasible machine for `job` (ties by ID) — with a ranking rule
    (Spread), of its first tier that has one — or None and every rejection met."""
    rejections: list[Rejection] = []
    ranker = job.requirements.ranker
    if ranker is None:
        with closing(iter(state.candidates(job))) as candidates:  # puts unused heap entries back
            for machine_id in candidates:
                rejection = _placing_refusal(job, machine_id, state)
                if rejection is None:
                    return machine_id, rejections
                rejections.append(rejection)
    else:
        for tier in ranker.tiers(job.name, state):
            found = _least_loaded(job, state, tier, rejections)
            if found is not None:
                return found, rejections
    if not rejections and job.requirements.reserves != (0, 0.0):
        # no machine had room: what each machine says (the unit waits, so this is rare)
        rejections = [r for m in sorted(state.machines) if (r := _placing_refusal(job, m, state))]
    if not rejections:
        rejections.append(state.nothing_left(job))
    return None, rejections


def _least_loaded(
    job: JobSpec, state: ClusterState, sets: Iterable[Collection[str]], rejections: list[Rejection]
) -> str | None:
    """The least-loaded feasible machine of any of `sets`, or None."""
    found: str | None = None
    for ids in sets:
        with closing(iter(state.ordered(ids))) as machines:
            for machine_id in machines:
                if found is not None and state.rank_key(machine_id) >= state.rank_key(found):
                    break  # a feasible machine at least as good is known
                rejection = _placing_refusal(job, machine_id, state)
                if rejection is None:
                    found = machine_id
                    break
                rejections.append(rejection)
    return found
