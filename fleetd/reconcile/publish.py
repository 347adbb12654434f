"""What an agent tells the cluster about its units: the state document of each, which ones to
put, and the restarts it did before it was restarted itself. Pure: the shell publishes.

A unit's state is published when what a reader sees of it really changes — systemd's three
states, why it is not running (`result`, `exit`, `load_error`, the start job's result when it
was not `done`), the last restart token done here and the unit's health as judged for a
rollout or a drain (`gate`, `health`, `health_reason`) — so a burst of D-Bus signals that
changes nothing costs no write.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from fleetd.model import UnitState
from fleetd.registry.fold import ClusterView

__all__ = [
    "SystemdWord",
    "Verdict",
    "restarts_done_before",
    "state_document",
    "states_to_publish",
    "verdicts_before",
]


class SystemdWord(Protocol):
    """What systemd said of a unit last (the systemd adapter's UnitState)."""

    @property
    def load(self) -> str: ...
    @property
    def active(self) -> str: ...
    @property
    def sub(self) -> str: ...
    @property
    def result(self) -> str: ...
    @property
    def exit(self) -> str: ...
    @property
    def load_error(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """The health of a unit as judged for the rollout or drain `gate` (its id)."""

    gate: str
    health: str  # reconcile/gates.py: Health
    reason: str


def state_document(
    machine_id: str,
    name: str,
    unit_hash: str,
    said: SystemdWord | None,
    job: str = "",
    restarted: str = "",
    verdict: Verdict | None = None,
) -> UnitState | None:
    """The state to publish for `name`: what systemd says, with why it is not running, the
    result of the last start job when it was not `done` (`job`), the token of the last
    restart done here and the last health verdict of a gate; None while systemd has said
    nothing of the unit yet."""
    if said is None:
        return None
    gate, health, reason = (verdict.gate, verdict.health, verdict.reason) if verdict else ("",) * 3
    return UnitState(
        name, machine_id, unit_hash, said.load, said.active, said.sub,
        said.result, said.exit, said.load_error, job, restarted, gate, health, reason,
    )  # fmt: skip


def states_to_publish(
    documents: Mapping[str, UnitState | None], published: Mapping[str, UnitState]
) -> list[UnitState]:
    """The documents that differ from what was last published, by unit name; a unit with no
    document yet waits (its state is published only once known)."""
    return [
        doc
        for name in sorted(documents)
        if (doc := documents[name]) is not None and published.get(name) != doc
    ]


def restarts_done_before(
    view: ClusterView, machine_id: str, units: Iterable[str], started: Collection[str]
) -> dict[str, str]:
    """The restart tokens done on `machine_id` before this fleetd started, by unit: those in
    the states it published (still there when it re-attached its lease). A unit adopted
    running (`started`) with no published state — the lease expired meanwhile, so every
    waiter was told its state went away — takes a pending request as done: it is not
    restarted long after the ask."""
    done: dict[str, str] = {}
    for name in units:
        published = view.states.get((name, machine_id))
        request = view.restarts.get((name, machine_id))
        if published is not None:
            done[name] = published.restarted
        elif name in started and request is not None:
            done[name] = request.token
    return done


def verdicts_before(view: ClusterView, machine_id: str, units: Iterable[str]) -> dict[str, Verdict]:
    """The health verdicts this machine published before this fleetd started, by unit: they
    stay published, and a gate still judging under the same token keeps a final one."""
    return {
        name: Verdict(published.gate, published.health, published.health_reason)
        for name in units
        if (published := view.states.get((name, machine_id))) is not None and published.gate
    }
