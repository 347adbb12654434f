"""What every placement rule is made of, and what a rule may read of the cluster.

A placement rule is one `[X-Fleet]` option (and the legacy names fleet still reads as it). Its
module holds all of it: a `Rule` (option names, and `parse`, which turns the option's values in
one unit file into a `Term` or refuses them with fleet's words) and the `Term` itself: the rule as
one unit states it, asked by the scheduler and by every agent (Global units) through the same
methods — may this machine take the unit (`check`), does a unit already there object to a
newcomer (`objects_to`), which machines are worth asking at all (`candidates`), which feasible
machine is preferred (`tiers`), and how a refusal reads (`text`, `heading`, `detail`).

Pure. Terms are frozen and hashable: a plan caches what it learnt per distinct term.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from fleetd.unit_names import UnitName

__all__ = [
    "Capacity",
    "Options",
    "Placing",
    "RejectReason",
    "Rejection",
    "Rule",
    "RuleSet",
    "Standing",
    "Term",
    "UnitValidationError",
    "refusal",
    "refusals",
]


class UnitValidationError(ValueError):
    """Options that parse but cannot be scheduled; the message names the option and the reason
    (fleet's ValidateOptions messages for fleet's rules)."""


class RejectReason(StrEnum):
    """Why a machine cannot take a unit, one member per kind of refusal."""

    MACHINE_ID = "MachineID"  # MachineID names another machine
    NO_MACHINE = "NoMachine"  # MachineID names no machine of the cluster
    METADATA = "MachineMetadata"
    WAITING = "Waiting"  # a MachineOf target has no machine yet
    MACHINE_OF = "MachineOf"  # a MachineOf target runs elsewhere
    CONFLICTS = "Conflicts"
    REPLACES = "Replaces"
    MAX_PER_MACHINE = "MaxPerMachine"
    RESOURCES = "Resources"  # not enough memory or CPU left (or the machine does not say)
    INVALID = "Invalid"  # the unit's [X-Fleet] section was refused (stored before a check)
    CORDONED = "Cordoned"  # the machine is cordoned (fleetctl cordon/drain): no new units
    OTHER = "Other"


# An option's values in one file: name -> values in file order (quoted multi-values split,
# specifiers expanded); options of other sections a rule `reads` as "Section.Name" -> values,
# as written.
Options = Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class Rule:
    """One [X-Fleet] rule: the option names it reads (modern first, then legacy) and how it
    reads them. `parse` returns None when the file does not use the rule, and raises
    UnitValidationError for values it cannot take."""

    name: str
    options: tuple[str, ...]
    parse: Callable[[Options, UnitName | None], Term | None]
    # options of other sections it reads too, as "Section.Name" (what systemd will enforce)
    reads: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a machine offers to units: memory in bytes and CPUs (None: it does not say), and
    whether it takes units beyond them (`fleetd.rules.resources.capacity_of` reads it)."""

    memory: int | None
    cpus: float | None
    overcommit: bool = False


class Placing(Protocol):
    """What a rule may read of the cluster while a plan is being made: the scheduler's working
    view (`fleetd.reconcile.scheduler.ClusterState`), or one machine as its agent sees it."""

    def machine_ids(self) -> Collection[str]: ...

    def metadata(self, machine_id: str) -> Mapping[str, str]: ...

    def neighbours(self, machine_id: str) -> Iterable[str]:
        """Units placed on the machine and the Global units it runs."""
        ...

    def placement(self, name: str) -> str | None: ...

    def count_on(self, machine_id: str, group: str) -> int:
        """Units on the machine (placed or Global) whose name matches the glob `group`."""
        ...

    def by_short_id(self, short: str) -> Sequence[str]: ...

    def matching(self, key: object, admits: Callable[[Mapping[str, str]], bool]) -> Collection[str]:
        """Machines whose metadata `admits`, cached under `key` for the plan."""
        ...

    def machines_by_value(self, key: str) -> Mapping[str, Collection[str]]:
        """The machines per value of the metadata `key` ("" for those without it)."""
        ...

    def spread(self, group: str, key: str) -> Mapping[str, int]:
        """Units of the glob `group` per value of the metadata `key` ("" for machines without
        it)."""
        ...

    def capacity(self, machine_id: str) -> Capacity:
        """What the machine offers to units (`fleetd.rules.resources.capacity_of`)."""
        ...

    def reserved_on(self, machine_id: str) -> tuple[int, float]:
        """Memory (bytes) and CPUs reserved by the units on the machine (placed or Global)."""
        ...

    def settled(self, name: str, machine_id: str) -> bool:
        """Whether the unit runs on the machine with the content it has now."""
        ...

    def judges_on(self, machine_id: str) -> Sequence[tuple[str, Term]]:
        """The units on the machine whose rules may refuse a newcomer (`judges_neighbours`),
        each with such a term, by unit name."""
        ...


class RuleSet(Protocol):
    """The rules of one unit (`fleetd.rules.requirements.Requirements`), as a rule's `validate`
    reads them."""

    def uses(self, rule: str) -> bool: ...

    def term(self, rule: str) -> Term | None: ...


class Term:
    """A rule as one unit file states it. Subclasses are frozen dataclasses; every method has a
    default meaning "this rule has nothing to say"."""

    __slots__ = ()

    rule: ClassVar[str] = ""  # the rule's option name, as messages show it
    # True for rules that may object to a newcomer on their machine (Conflicts, Replaces):
    # the scheduler indexes the units carrying them.
    judges_neighbours: ClassVar[bool] = False
    # True for soft rules that order feasible machines (Spread).
    ranks: ClassVar[bool] = False
    # False for options that say how a unit is handled rather than where it may go (the update
    # policy, the disruption budget): kept apart, never asked by the scheduler.
    places: ClassVar[bool] = True

    @property
    def reserves(self) -> tuple[int, float]:
        """Memory (bytes) and CPUs the unit takes of its machine by this rule."""
        return 0, 0.0

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        """Why `machine_id` cannot take the unit `job`, or None."""
        return None

    def objects_to(
        self, owner: str, newcomer: str, machine_id: str, view: Placing
    ) -> Rejection | None:
        """Why the unit `owner`, on `machine_id`, keeps `newcomer` away, or None."""
        return None

    def candidates(self, job: str, view: Placing) -> Collection[str] | None:
        """The only machines worth checking (unsorted), or None for any machine."""
        return None

    def nothing_left(self, job: str, view: Placing) -> Rejection:
        """Why `candidates` gave no machine at all."""
        return Rejection("", RejectReason.OTHER, self, "no machine meets its requirements")

    def tiers(self, job: str, view: Placing) -> list[list[Collection[str]]]:
        """For a ranking rule: the machines in tiers, the preferred first; each tier is a few
        sets of machines (the least loaded feasible machine of the first tier that has one
        takes the unit)."""
        return [[view.machine_ids()]]

    def validate(self, requirements: RuleSet) -> str | None:
        """fleet's message if this rule cannot be combined with the unit's other rules."""
        return None

    def standing(self, job: str, machine_id: str, view: Placing) -> list[Standing]:
        """How the rule stands for `job` on `machine_id`, part by part (`fleetctl why`)."""
        rejection = self.check(job, machine_id, view)
        if rejection is not None:
            return [Standing(rejection.heading, False, rejection.detail)]
        return [Standing(str(self), True, self.seen(job, machine_id, view))]

    def seen(self, job: str, machine_id: str, view: Placing) -> str:
        """What the rule saw on a machine where it holds (`fleetctl why`), or ""."""
        return ""

    def __str__(self) -> str:
        """The rule as the unit states it, e.g. `MachineMetadata region!=eu`."""
        return self.rule

    # ---- how a refusal reads: `text` a sentence for fleetctl's failure reports, `heading`
    # the part of the rule that refused (for `fleetctl why`), `detail` what on that machine
    # made it refuse.

    def text(self, rejection: Rejection) -> str:
        return str(rejection.subject)

    def heading(self, rejection: Rejection) -> str:
        return str(self)

    def detail(self, rejection: Rejection) -> str:
        return self.text(rejection)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one machine cannot take one unit. Checks run hundreds of thousands of times in a
    large plan, so they only record the term and its subject; words are made when read."""

    machine_id: str  # "" when the refusal is about no machine in particular
    reason: RejectReason
    term: Term
    subject: object = None

    @property
    def text(self) -> str:
        return self.term.text(self)

    @property
    def heading(self) -> str:
        return self.term.heading(self)

    @property
    def detail(self) -> str:
        return self.term.detail(self)


@dataclass(frozen=True, slots=True)
class Standing:
    """One part of a rule on one machine: the rule as written, whether it holds, what it saw."""

    heading: str
    holds: bool
    seen: str


@dataclass(frozen=True, slots=True)
class Objection:
    """The subject of a refusal by a unit already on the machine (its Conflicts, Replaces or
    MaxPerMachine), with what it counted there if it counts."""

    owner: str
    count: int = 0


def refusal(job: str, terms: Iterable[Term], machine_id: str, view: Placing) -> Rejection | None:
    """The first reason `machine_id` cannot take `job` (whose rules are `terms`): its own rules
    in order, then the objections of the units already there. None: it may run there."""
    for term in terms:
        rejection = term.check(job, machine_id, view)
        if rejection is not None:
            return rejection
    for owner, term in view.judges_on(machine_id):
        if owner != job:
            rejection = term.objects_to(owner, job, machine_id, view)
            if rejection is not None:
                return rejection
    return None


def refusals(job: str, terms: Iterable[Term], machine_id: str, view: Placing) -> list[Rejection]:
    """Every reason `machine_id` cannot take `job`, one per rule that refuses (`refusal` stops
    at the first: this is for telling a user why)."""
    found = [r for term in terms if (r := term.check(job, machine_id, view)) is not None]
    for owner, term in view.judges_on(machine_id):
        if owner != job and (r := term.objects_to(owner, job, machine_id, view)) is not None:
            found.append(r)
    return found
