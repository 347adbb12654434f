"""`MachineID=` (legacy `X-ConditionMachineID=`, `X-ConditionMachineBootID=`): run on the machine
with this ID, full or its 8-character short form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import Options, Placing, Rejection, RejectReason, Rule, RuleSet, Term
from fleetd.unit_names import UnitName

__all__ = ["RULE", "SHORT_ID_LENGTH", "MachineID", "short_id"]

# A machine's short ID is the first this many characters of its ID (see short_id).
SHORT_ID_LENGTH = 8
# fleet's precedence when several forms are given: the first value of the first form.
_ORDER = ("MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID")
# fleet's ValidateOptions: MachineID pins the unit, so no other rule may move it.
_ALONE = (
    ("MachineOf", "MachineID cannot be used with Peers"),
    ("Conflicts", "MachineID cannot be used with Conflicts"),
    ("Global", "MachineID cannot be used with Global"),
    ("Replaces", "MachineID cannot be used with Replaces"),
)


def short_id(machine_id: str) -> str:
    """A machine ID's short form (`5ab7f3b4`): what fleetctl and fleetd's messages show, and
    what `MachineID=` accepts besides the full ID. Defined here, next to the MachineID rule,
    since the unit model is the lowest layer; `fleetd.model` re-exports it for everyone else."""
    return machine_id[:SHORT_ID_LENGTH]


@dataclass(frozen=True, slots=True)
class MachineID(Term):
    rule: ClassVar[str] = "MachineID"
    machine_id: str

    def matches(self, machine_id: str) -> bool:
        """The full ID, or its 8-character short form (as fleet matches)."""
        return machine_id == self.machine_id or (
            len(self.machine_id) == SHORT_ID_LENGTH and short_id(machine_id) == self.machine_id
        )

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        if self.matches(machine_id):
            return None
        return Rejection(machine_id, RejectReason.MACHINE_ID, self, self.machine_id)

    def candidates(self, job: str, view: Placing) -> list[str]:
        ids = {self.machine_id} & set(view.machine_ids())
        if len(self.machine_id) == SHORT_ID_LENGTH:
            ids.update(view.by_short_id(self.machine_id))
        return list(ids)

    def nothing_left(self, job: str, view: Placing) -> Rejection:
        return Rejection("", RejectReason.NO_MACHINE, self, self.machine_id)

    def validate(self, requirements: RuleSet) -> str | None:
        return next((message for rule, message in _ALONE if requirements.uses(rule)), None)

    def seen(self, job: str, machine_id: str, view: Placing) -> str:
        return f"this is {short_id(machine_id)}"

    def __str__(self) -> str:
        return f"MachineID={self.machine_id}"

    def text(self, rejection: Rejection) -> str:
        if rejection.reason is RejectReason.NO_MACHINE:
            return f"MachineID={self.machine_id} names no machine in the cluster"
        return f"MachineID={self.machine_id} names another machine"

    def detail(self, rejection: Rejection) -> str:
        return "another machine"


def _parse(options: Options, name: UnitName | None) -> MachineID | None:
    value = next((options[k][0] for k in _ORDER if options.get(k)), "")
    return MachineID(value) if value else None


RULE = Rule("MachineID", _ORDER, _parse)
