"""What `fleetctl why` says of a unit (`fleetd/reconcile/why.py` decides it): the explanation
as plain data — `Explanation` and its parts — with `to_dict` for the API's JSON and the lines
fleetctl prints. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fleetd.model import short_id

__all__ = [
    "Example",
    "Explanation",
    "GlobalVerdict",
    "Kind",
    "MachineRef",
    "RuleCheck",
    "RuleRejections",
]


class Kind(StrEnum):
    INACTIVE = "inactive"  # desired inactive: nothing to schedule
    GLOBAL = "global"  # runs on every machine its rules admit
    PLACED = "placed"  # has a live machine
    UNPLACED = "unplaced"  # wants a machine, has none


@dataclass(frozen=True, slots=True)
class MachineRef:
    id: str
    ip: str = ""

    @property
    def label(self) -> str:
        """As fleetctl shows a machine: `5ab7f3b4.../127.0.0.11`."""
        return f"{short_id(self.id)}.../{self.ip}" if self.ip else f"{short_id(self.id)}..."

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "primaryIP": self.ip}


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule of a placed unit on its machine: does it hold there, and what it saw."""

    rule: str  # the rule as the unit states it (`MachineMetadata region!=eu`)
    holds: bool
    detail: str = ""  # what on the machine it looked at (`region=us`)

    @property
    def text(self) -> str:
        verdict = "holds" if self.holds else "broken: the engine moves it"
        return f"{self.rule}: {verdict}" + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "holds": self.holds, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Example:
    machine: str  # short ID
    detail: str  # what on that machine made the rule refuse

    @property
    def text(self) -> str:
        return f"{self.machine}: {self.detail}" if self.detail else self.machine


@dataclass(frozen=True, slots=True)
class RuleRejections:
    """One rule (`Rejection.heading`) over every machine of the cluster: how many it refused."""

    rule: str
    rejected: int
    machines: int
    examples: tuple[Example, ...] = ()

    @property
    def more(self) -> int:
        return self.rejected - len(self.examples)

    @property
    def text(self) -> str:
        noun = "machine" if self.machines == 1 else "machines"
        out = f"{self.rule}: {self.rejected} of {self.machines} {noun} rejected"
        shown = [e.text for e in self.examples] + ([f"and {self.more} more"] if self.more else [])
        return out + (f" ({', '.join(shown)})" if shown else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "rejected": self.rejected,
            "machines": self.machines,
            "examples": [{"machine": e.machine, "detail": e.detail} for e in self.examples],
            "more": self.more,
        }


@dataclass(frozen=True, slots=True)
class GlobalVerdict:
    """A Global unit on one machine: runs there, or the rules that keep it off."""

    machine: MachineRef
    runs: bool
    state: str = ""  # `active/running` as the machine reports it ("" when none)
    kept_off_by: tuple[tuple[str, str], ...] = ()  # (rule, detail)

    @property
    def text(self) -> str:
        if self.runs:
            return f"{self.machine.label}: runs there ({self.state or 'no state reported yet'})"
        why = "; ".join(f"{r} ({d})" if d else r for r, d in self.kept_off_by)
        return f"{self.machine.label}: kept off by {why or 'its rules'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine.to_dict(),
            "runs": self.runs,
            "state": self.state,
            "keptOffBy": [{"rule": r, "detail": d} for r, d in self.kept_off_by],
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why `name` runs where it does, or nowhere. Fields a kind does not use stay empty."""

    name: str
    kind: Kind
    desired: str
    current: str | None  # fleet's currentState (None: a Global unit)
    reason: str = ""  # INACTIVE, UNPLACED: the sentence
    machine: MachineRef | None = None  # PLACED
    machines: int = 0  # in the cluster
    feasible: int | None = None  # machines that may take it now (PLACED, UNPLACED)
    rules: tuple[RuleCheck, ...] = ()  # PLACED: every rule of the unit on its machine
    rejections: tuple[RuleRejections, ...] = ()  # UNPLACED: per rule over every machine
    ranking: str = ""  # PLACED: how its machine was preferred among the feasible ones
    on_machines: tuple[GlobalVerdict, ...] = ()  # GLOBAL: per machine

    @property
    def summary(self) -> str:
        if self.kind is Kind.INACTIVE:
            return f"Unit {self.name} is not scheduled: {self.reason}."
        if self.kind is Kind.GLOBAL:
            runs = sum(v.runs for v in self.on_machines)
            return (
                f"Unit {self.name} is a Global unit: it runs on {runs} of "
                f"{_machines(len(self.on_machines))}."
            )
        if self.kind is Kind.PLACED and self.machine is not None:
            return f"Unit {self.name} is placed on {self.machine.label}."
        return f"Unit {self.name} is not placed on any machine."

    def lines(self) -> list[str]:
        """What `fleetctl why` prints."""
        out = [self.summary]
        if self.kind is Kind.INACTIVE:
            return out
        if self.kind is Kind.UNPLACED:
            out.append(f"Reason: {self.reason}")
        current = f" (current: {self.current})" if self.current else ""
        out.append(f"Desired state: {self.desired}{current}")
        if self.kind is Kind.GLOBAL:
            if self.on_machines:
                out.append("Machines:")
                out += [f"  {v.text}" for v in self.on_machines]
            return out
        if self.kind is Kind.PLACED and self.machine is not None:
            if self.rules:
                out.append(f"Rules on {short_id(self.machine.id)}:")
                out += [f"  {r.text}" for r in self.rules]
            else:
                out.append(f"Rules on {short_id(self.machine.id)}: none (any machine may take it)")
        elif self.rejections:
            out.append(f"Rules over the {_machines(self.machines)} of the cluster:")
            out += [f"  {r.text}" for r in self.rejections]
        if self.feasible is not None and self.machines:
            out.append(f"Feasible machines now: {self.feasible} of {self.machines}")
        if self.ranking:
            out.append(f"Ranking: {self.ranking}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "summary": self.summary,
            "desiredState": self.desired,
            "currentState": self.current,
            "reason": self.reason,
            "machine": self.machine.to_dict() if self.machine is not None else None,
            "machines": self.machines,
            "feasible": self.feasible,
            "rules": [r.to_dict() for r in self.rules],
            "rejections": [r.to_dict() for r in self.rejections],
            "ranking": self.ranking,
            "global": [v.to_dict() for v in self.on_machines],
            "lines": self.lines(),
        }


def _machines(n: int) -> str:
    return f"{n} machine" if n == 1 else f"{n} machines"
