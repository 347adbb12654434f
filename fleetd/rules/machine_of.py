"""`MachineOf=` (legacy `X-ConditionMachineOf=`): run on the machine of these units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import Options, Placing, Rejection, RejectReason, Rule, RuleSet, Term
from fleetd.rules.options import dedup
from fleetd.unit_names import UnitName, go_quote

__all__ = ["RULE", "MachineOf"]

# Rules whose patterns may not match a peer (fleet: "unresolvable requirements"), by the word
# fleet's message uses for each.
_EXCLUDING = (("Conflicts", "conflict"), ("Replaces", "replace"))


@dataclass(frozen=True, slots=True)
class MachineOf(Term):
    rule: ClassVar[str] = "MachineOf"
    peers: tuple[str, ...]

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        for peer in self.peers:
            where = view.placement(peer)
            if where is None:
                return Rejection(machine_id, RejectReason.WAITING, self, peer)
            if where != machine_id:
                return Rejection(machine_id, RejectReason.MACHINE_OF, self, peer)
        return None

    def candidates(self, job: str, view: Placing) -> list[str]:
        return list({m for m in map(view.placement, self.peers) if m is not None})

    def nothing_left(self, job: str, view: Placing) -> Rejection:
        missing = [p for p in self.peers if view.placement(p) is None]
        if missing:
            return Rejection("", RejectReason.WAITING, self, missing[0])
        return Rejection("", RejectReason.OTHER, self, None)

    def validate(self, requirements: RuleSet) -> str | None:
        for peer in self.peers:
            for rule, word in _EXCLUDING:
                term = requirements.term(rule)
                pattern = getattr(term, "pattern_for", lambda _: None)(peer)
                if pattern is not None:
                    return (
                        f"unresolvable requirements: peer {go_quote(peer)} "
                        f"matches {word} {go_quote(pattern)}"
                    )
        return None

    def seen(self, job: str, machine_id: str, view: Placing) -> str:
        return f"{', '.join(self.peers)} there"

    def __str__(self) -> str:
        return f"MachineOf={' '.join(self.peers)}"

    def text(self, rejection: Rejection) -> str:
        if rejection.reason is RejectReason.WAITING:
            return f"waiting for MachineOf={rejection.subject} to be placed"
        if rejection.reason is RejectReason.MACHINE_OF:
            return f"MachineOf={rejection.subject} runs on another machine"
        return "its MachineOf units run on different machines"

    def detail(self, rejection: Rejection) -> str:
        if rejection.reason is RejectReason.WAITING:
            return f"{rejection.subject} has no machine yet"
        return f"{rejection.subject} runs elsewhere"


def _parse(options: Options, name: UnitName | None) -> MachineOf | None:
    peers = dedup([*options.get("X-ConditionMachineOf", ()), *options.get("MachineOf", ())])
    return MachineOf(tuple(peers)) if peers else None


RULE = Rule("MachineOf", ("MachineOf", "X-ConditionMachineOf"), _parse)
