"""`MaxPerMachine=N [GLOB]`: at most N units of the unit's group on one machine (hard).

The group is described in `fleetd.rules.group`. The rule holds both ways: the unit does not go
where N units of its group run already (`check`), and once it runs somewhere, no unit of its
group joins it there beyond N (`objects_to`) — so a unit without the rule cannot push one that
has it over its limit (and off its machine).
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
    judges_neighbours: ClassVar[bool] = True
    limit: int
    group: str

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        there = self._others(job, machine_id, view)
        if there < self.limit:
            return None
        return Rejection(machine_id, RejectReason.MAX_PER_MACHINE, self, there)

    def objects_to(
        self, owner: str, newcomer: str, machine_id: str, view: Placing
    ) -> Rejection | None:
        if not glob_match(self.group, newcomer):
            return None
        there = self._others(newcomer, machine_id, view)
        if there < self.limit:
            return None
        return Rejection(machine_id, RejectReason.MAX_PER_MACHINE, self, Objection(owner, there))

    def _others(self, job: str, machine_id: str, view: Placing) -> int:
        """Units of the group on the machine, `job` aside (re-checked where it runs)."""
        there = view.count_on(machine_id, self.group)
        if view.placement(job) == machine_id and glob_match(self.group, job):
            there -= 1
        return there

    def seen(self, job: str, machine_id: str, view: Placing) -> str:
        others = self._others(job, machine_id, view)
        return f"{others} other unit{'' if others == 1 else 's'} of {self.group} there"

    def __str__(self) -> str:
        return f"MaxPerMachine={self.limit} {self.group}"

    def text(self, rejection: Rejection) -> str:
        s = rejection.subject
        if isinstance(s, Objection):
            return f"{s.owner} has MaxPerMachine={self.limit}: {s.count} of {self.group} there"
        return f"MaxPerMachine={self.limit}: {s} of {self.group} there already"

    def heading(self, rejection: Rejection) -> str:
        if isinstance(rejection.subject, Objection):
            return "MaxPerMachine of the units already there"
        return str(self)

    def detail(self, rejection: Rejection) -> str:
        s = rejection.subject
        if isinstance(s, Objection):
            return f"{s.owner} has {self}, {s.count} there"
        return f"{s} there"


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
