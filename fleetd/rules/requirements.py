"""The rules of one unit: its [X-Fleet] section read by every rule of the catalog.

`Requirements.of` never raises: a value a rule refuses is kept as an `Invalid` term (which
refuses every machine, with the reason) and raised by `validate`, which the API and fleetctl
call before anything is written. So a unit stored before a check existed, or written to etcd by
hand, is reported unplaced with its reason instead of crashing a reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from fleetd.rules.base import Placing, Rejection, RejectReason, Term, UnitValidationError
from fleetd.rules.catalog import RULES
from fleetd.rules.options import expand, multivalue
from fleetd.rules.update import DEFAULT_POLICY, DisruptionBudget, UpdatePolicy
from fleetd.unit_names import UnitName, UnitNameError, parse_name

__all__ = ["READS", "XFLEET", "Invalid", "Requirements"]

XFLEET = "X-Fleet"  # the section's name
_KNOWN = frozenset(name for rule in RULES for name in rule.options)
# Options of other sections some rule reads, as "Section.Name" (`UnitFile.requirements`).
READS = frozenset(key for rule in RULES for key in rule.reads)
_ORDER = {rule.name: i for i, rule in enumerate(RULES)}  # an Invalid term (unknown rule) first


@dataclass(frozen=True, slots=True)
class Invalid(Term):
    """A value a rule refused: no machine may take the unit."""

    rule: ClassVar[str] = "X-Fleet"
    message: str

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        return Rejection(machine_id, RejectReason.INVALID, self, self.message)

    def candidates(self, job: str, view: Placing) -> list[str]:
        return []

    def nothing_left(self, job: str, view: Placing) -> Rejection:
        return Rejection("", RejectReason.INVALID, self, self.message)

    def __str__(self) -> str:
        return f"[X-Fleet] ({self.message})"

    def text(self, rejection: Rejection) -> str:
        return f"its [X-Fleet] section is invalid: {self.message}"


@dataclass(frozen=True, slots=True)
class Requirements:
    """What [X-Fleet] asks of the machine a unit runs on: one term per rule the file uses, in
    the catalog's order, specifiers already expanded."""

    terms: tuple[Term, ...] = ()
    unknown: tuple[str, ...] = field(default=(), compare=False)  # option names no rule reads
    # derived from `terms` (kept for the scheduler's hot path)
    judges: tuple[Term, ...] = field(default=(), compare=False, repr=False)
    ranker: Term | None = field(default=None, compare=False, repr=False)
    reserves: tuple[int, float] = field(default=(0, 0.0), compare=False, repr=False)
    # terms that place nothing (`Term.places` False: the update policy, the disruption budget)
    policies: tuple[Term, ...] = ()
    # whether it uses Global: asked per unit on every event a waiter or an agent follows
    is_global: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_global", self.uses("Global"))

    @classmethod
    def of(
        cls,
        options: Iterable[tuple[str, str]],
        unit_name: str,
        reads: Iterable[tuple[str, str]] = (),
    ) -> Requirements:
        """From the (name, value) options of a file's [X-Fleet] section, in file order, and
        the options of other sections the rules read (`READS`: ("Section.Name", value))."""
        try:
            name: UnitName | None = parse_name(unit_name)
        except UnitNameError:
            name = None
        raw: dict[str, list[str]] = {}
        unknown: list[str] = []
        for opt_name, value in options:
            if opt_name not in _KNOWN and opt_name not in unknown:
                unknown.append(opt_name)
            raw.setdefault(opt_name, []).extend(expand(v, name) for v in multivalue(value))
        for key, value in reads:
            raw.setdefault(key, []).append(value)
        terms: list[Term] = []
        for rule in RULES:
            try:
                term = rule.parse(raw, name)
            except UnitValidationError as err:
                term = Invalid(str(err))
            if term is not None:
                terms.append(term)
        return cls.from_terms(terms, tuple(unknown))

    @classmethod
    def from_terms(cls, terms: Iterable[Term], unknown: tuple[str, ...] = ()) -> Requirements:
        # in the catalog's order; an invalid value first: it refuses every machine
        everything = sorted(terms, key=lambda t: _ORDER.get(t.rule, -1))
        ordered = tuple(t for t in everything if t.places)
        reserves = [t.reserves for t in ordered]
        return cls(
            ordered,
            unknown,
            tuple(t for t in ordered if t.judges_neighbours),
            next((t for t in ordered if t.ranks), None),
            (sum(m for m, _ in reserves), sum(c for _, c in reserves)),
            tuple(t for t in everything if not t.places),
        )

    def term(self, rule: str) -> Term | None:
        """This unit's term of the rule named `rule`, if it uses it."""
        return next((t for t in self.terms + self.policies if t.rule == rule), None)

    @property
    def update(self) -> UpdatePolicy:
        """How a new version rolls over the unit's instances (the defaults if not said)."""
        policy = self.term("Update")
        return policy if isinstance(policy, UpdatePolicy) else DEFAULT_POLICY

    @property
    def budget(self) -> DisruptionBudget | None:
        """How many of the unit's group must stay healthy, if it says."""
        budget = self.term("DisruptionBudget")
        return budget if isinstance(budget, DisruptionBudget) else None

    def uses(self, rule: str) -> bool:
        return any(t.rule == rule for t in self.terms) or any(t.rule == rule for t in self.policies)

    def validate(self) -> None:
        """Raise UnitValidationError, naming the option and the reason, if a rule refused a
        value or two rules cannot be combined (fleet's messages for fleet's rules)."""
        for term in self.terms:
            if isinstance(term, Invalid):
                raise UnitValidationError(term.message)
        for term in self.terms + self.policies:
            problem = term.validate(self)
            if problem is not None:
                raise UnitValidationError(problem)
