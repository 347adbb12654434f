"""`MaxPerMachine=N [GLOB]`: at most N units of the unit's group on one machine (hard).

The group is described in `fleetd.rules.group`. Only the unit's own rule counts: a unit of the
group without the rule is not kept away by it (give every instance the rule: a template does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import (
    Options,
    Placing,
    RejectReason,
    Rejection,
    Rule,
    Term,
    UnitValidationError,
)
from fleetd.rules.globs import glob_match
from fleetd.rules.group import read_group
from fleetd.unit_names import UnitName

__all__ = ["RULE", "MaxPerMachine"]


@dataclass(frozen=True, slots=True)
class MaxPerMachine(Term):
    rule: ClassVar[str] = "MaxPerMachine"
    limit: int
    group: str

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        there = view.count_on(machine_id, self.group)
        if view.placement(job) == machine_id and glob_match(self.group, job):
            there -= 1  # itself, re-checked where it runs
        if there < self.limit:
            return None
        return Rejection(machine_id, RejectReason.MAX_PER_MACHINE, self, there)

    def __str__(self) -> str:
        return f"MaxPerMachine={self.limit} {self.group}"

    def text(self, rejection: Rejection) -> str:
        return f"MaxPerMachine={self.limit}: {rejection.subject} of {self.group} there already"

    def detail(self, rejection: Rejection) -> str:
        return f"{rejection.subject} there"


def _parse(options: Options, name: UnitName | None) -> MaxPerMachine | None:
    values = options.get("MaxPerMachine", ())
    if not values:
        return None
    value = values[-1]  # the last one wins
    limit, group = read_group("MaxPerMachine", value, name)
    if not limit.isdigit() or int(limit) < 1:
        raise UnitValidationError(
            f"MaxPerMachine={value}: {limit!r} is not a whole number of at least 1"
        )
    return MaxPerMachine(int(limit), group)


RULE = Rule("MaxPerMachine", ("MaxPerMachine",), _parse)
