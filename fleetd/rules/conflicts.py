"""`Conflicts=` (legacy `X-Conflicts=`): never share a machine with units matching these globs.

Either side's rule keeps the two apart, as in fleet: a unit's own Conflicts refuses machines
running a match (`check`), and a unit already on a machine refuses a newcomer that its
Conflicts match (`objects_to`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import (
    Objection,
    Options,
    Placing,
    Rejection,
    RejectReason,
    Rule,
    RuleSet,
    Term,
)
from fleetd.rules.globs import glob_any, glob_match
from fleetd.rules.options import dedup, fields
from fleetd.unit_names import UnitName

__all__ = ["RULE", "Conflicts"]


@dataclass(frozen=True, slots=True)
class Conflicts(Term):
    rule: ClassVar[str] = "Conflicts"
    judges_neighbours: ClassVar[bool] = True
    patterns: tuple[str, ...]

    def pattern_for(self, name: str) -> str | None:
        """The first pattern that matches `name`, or None."""
        return next((p for p in self.patterns if glob_match(p, name)), None)

    def matches(self, name: str) -> bool:
        return glob_any(self.patterns)(name)

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        matches = glob_any(self.patterns)
        found = [o for o in view.neighbours(machine_id) if o != job and matches(o)]
        if not found:
            return None
        return Rejection(machine_id, RejectReason.CONFLICTS, self, min(found))

    def objects_to(
        self, owner: str, newcomer: str, machine_id: str, view: Placing
    ) -> Rejection | None:
        if self.matches(newcomer):
            return Rejection(machine_id, RejectReason.CONFLICTS, self, Objection(owner))
        return None

    def validate(self, requirements: RuleSet) -> str | None:
        if requirements.uses("Replaces"):
            return "Conflicts cannot be used with Replaces"
        return None

    def seen(self, job: str, machine_id: str, view: Placing) -> str:
        return "nothing there matches"

    def __str__(self) -> str:
        return f"Conflicts={' '.join(self.patterns)}"

    def text(self, rejection: Rejection) -> str:
        s = rejection.subject
        return f"conflicts with {s.owner if isinstance(s, Objection) else s}"

    def heading(self, rejection: Rejection) -> str:
        if isinstance(rejection.subject, Objection):
            return "Conflicts of the units already there"
        return str(self)

    def detail(self, rejection: Rejection) -> str:
        s = rejection.subject
        if isinstance(s, Objection):
            return f"{s.owner} has {self}"
        return f"runs {s}"


def _parse(options: Options, name: UnitName | None) -> Conflicts | None:
    patterns = dedup(fields([*options.get("X-Conflicts", ()), *options.get("Conflicts", ())]))
    return Conflicts(tuple(patterns)) if patterns else None


RULE = Rule("Conflicts", ("Conflicts", "X-Conflicts"), _parse)
