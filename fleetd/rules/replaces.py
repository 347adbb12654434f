"""`Replaces=`: take the place of units matching these globs: they may not run on this unit's
machine, and one already there is moved away (the engine re-checks placed units)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import Objection, Options, Placing, Rejection, RejectReason, Rule, Term
from fleetd.rules.globs import glob_match
from fleetd.rules.options import dedup, fields
from fleetd.unit_names import UnitName

__all__ = ["RULE", "Replaces"]


@dataclass(frozen=True, slots=True)
class Replaces(Term):
    rule: ClassVar[str] = "Replaces"
    judges_neighbours: ClassVar[bool] = True
    patterns: tuple[str, ...]

    def pattern_for(self, name: str) -> str | None:
        """The first pattern that matches `name`, or None."""
        return next((p for p in self.patterns if glob_match(p, name)), None)

    def objects_to(
        self, owner: str, newcomer: str, machine_id: str, view: Placing
    ) -> Rejection | None:
        if self.pattern_for(newcomer) is not None:
            return Rejection(machine_id, RejectReason.REPLACES, self, Objection(owner))
        return None

    def __str__(self) -> str:
        return f"Replaces={' '.join(self.patterns)}"

    def text(self, rejection: Rejection) -> str:
        s = rejection.subject
        return f"replaced by {s.owner if isinstance(s, Objection) else s}"

    def heading(self, rejection: Rejection) -> str:
        return "Replaces of the units already there"

    def detail(self, rejection: Rejection) -> str:
        s = rejection.subject
        return f"{s.owner if isinstance(s, Objection) else s} has {self}"


def _parse(options: Options, name: UnitName | None) -> Replaces | None:
    patterns = dedup(fields(options.get("Replaces", ())))
    return Replaces(tuple(patterns)) if patterns else None


RULE = Rule("Replaces", ("Replaces",), _parse)
