"""`Global=true`: run on every machine whose rules admit it, instead of being placed on one.

The engine never places a Global unit; every agent runs it where its other rules (metadata,
Conflicts, ...) admit its machine (`fleetd.reconcile.globals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import Options, Rule, RuleSet, Term
from fleetd.unit_names import UnitName

__all__ = ["RULE", "Global"]

_TRUTHY = frozenset({"true", "yes", "1", "on", "t"})  # fleet's words for true
_ALONE = (
    ("MachineOf", "Global cannot be used with Peers"),
    ("Replaces", "Global cannot be used with Replaces"),
)


@dataclass(frozen=True, slots=True)
class Global(Term):
    rule: ClassVar[str] = "Global"

    def validate(self, requirements: RuleSet) -> str | None:
        return next((message for rule, message in _ALONE if requirements.uses(rule)), None)

    def __str__(self) -> str:
        return "Global=true"


def _parse(options: Options, name: UnitName | None) -> Global | None:
    values = options.get("Global", ())
    return Global() if values and values[-1].lower() in _TRUTHY else None  # the last one wins


RULE = Rule("Global", ("Global",), _parse)
