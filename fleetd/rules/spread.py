"""`Spread=KEY [GLOB]`: prefer the machines whose value of the metadata KEY holds the fewest
units of the unit's group (soft: it orders the machines that may take the unit, it never keeps
a unit unplaced). Among machines whose values hold as many, the least loaded first; machines
without KEY come last. The group is described in `fleetd.rules.group`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import Options, Placing, Rule, RuleSet, Term, UnitValidationError
from fleetd.rules.globs import glob_match
from fleetd.rules.group import read_group
from fleetd.rules.metadata import KEY_CHARACTERS, is_key
from fleetd.unit_names import UnitName

__all__ = ["RULE", "Spread"]


@dataclass(frozen=True, slots=True)
class Spread(Term):
    rule: ClassVar[str] = "Spread"
    ranks: ClassVar[bool] = True
    key: str
    group: str

    def tiers(self, job: str, view: Placing) -> list[list[Collection[str]]]:
        counts = dict(view.spread(self.group, self.key))
        here = view.placement(job)
        if here is not None and glob_match(self.group, job):  # itself does not count
            counts[view.metadata(here).get(self.key, "")] -= 1
        by_value = view.machines_by_value(self.key)
        by_count: dict[int, list[Collection[str]]] = {}
        for value, machines in by_value.items():
            if value:
                by_count.setdefault(counts.get(value, 0), []).append(machines)
        tiers = [by_count[n] for n in sorted(by_count)]
        keyless = by_value.get("")
        return [*tiers, [keyless]] if keyless else tiers

    def validate(self, requirements: RuleSet) -> str | None:
        if requirements.uses("Global"):
            return "Spread cannot be used with Global"
        if requirements.uses("MachineID"):
            return "Spread cannot be used with MachineID"
        return None

    def seen(self, job: str, machine_id: str, view: Placing) -> str:
        value = view.metadata(machine_id).get(self.key)
        if value is None:
            return f"no {self.key}: machines without it come last"
        count = view.spread(self.group, self.key).get(value, 0)
        if view.placement(job) == machine_id and glob_match(self.group, job):
            count -= 1  # itself does not count
        return (
            f"{self.key}={value} has {count} other unit{'' if count == 1 else 's'} of {self.group}"
        )

    def __str__(self) -> str:
        return f"Spread={self.key} {self.group}"


def _parse(options: Options, name: UnitName | None) -> Spread | None:
    values = options.get("Spread", ())
    if not values:
        return None
    key, group = read_group("Spread", values[-1], name)  # the last one wins
    if not is_key(key):
        raise UnitValidationError(
            f"Spread={values[-1]}: {key!r} is not a metadata key ({KEY_CHARACTERS})"
        )
    return Spread(key, group)


RULE = Rule("Spread", ("Spread",), _parse)
