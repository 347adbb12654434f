"""Where one `POST /fleet/v1/x/wait` (docs/api.md) stands: which units it still waits for, and
the lines it writes as they arrive, fail, turn out unschedulable or time out. Pure.

The handler follows the registry into a view and hands each step here with the loop's time;
`WaitProgress` answers with the lines to write and keeps the rest of the wait's state: the
units still pending, and when a settling service has been active long enough (a deadline the
handler sleeps until: a time passed in, never a clock read). Whether a unit without a machine
can be placed at all is the engine's planner's to say (a layer above this one): the handler
asks it for the units `unplaced` names, only when `placement_may_change`, and hands the
reasons back to `unschedulable`. Each unit's line itself is `fleetd.reconcile.waiting`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetd.model import JobState, ModelError
from fleetd.reconcile import body as fields
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.waiting import (
    Step,
    View,
    current_state,
    failure,
    is_global,
    pending_reason,
    reached,
    settles,
    unschedulable,
)
from fleetd.registry.fold import Changed
from fleetd.registry.keys import KeyKind

__all__ = ["SETTLE_MAX", "WaitAsk", "WaitProgress", "read_wait"]

SETTLE_MAX = 600  # seconds a unit may be asked to stay active: a bound, against typos


@dataclass(frozen=True, slots=True)
class WaitAsk:
    """A wait request that passed its checks: the units (in order, each once), the state to
    wait for (and systemd-active, if `active`), the timeout, and how many seconds a service
    that may die right after it started must stay active before it counts (`settle`)."""

    units: tuple[str, ...]
    state: JobState
    active: bool = False
    timeout: float | None = None
    settle: float = 0.0


def read_wait(body: object) -> WaitAsk | Refuse:
    """The wait asked by the decoded JSON `body`, or its 400."""
    if not isinstance(body, dict):
        return Refuse(400, "unable to decode body: expected a JSON object")
    names = body.get("units")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return Refuse(400, "units must be a non-empty list of unit names")
    try:
        state = JobState.parse(body.get("state"))
    except ModelError:
        return Refuse(
            400, f"invalid state {body.get('state')!r}: expected inactive, loaded or launched"
        )
    waited = fields.wait_fields(body, "active")
    if isinstance(waited, Refuse):
        return waited
    active, timeout = waited
    settle = body.get("settle", 0)
    if (
        isinstance(settle, bool)
        or not isinstance(settle, int | float)
        or not 0 <= settle <= SETTLE_MAX
    ):
        return Refuse(400, f"settle must be a number of seconds between 0 and {SETTLE_MAX}")
    return WaitAsk(tuple(dict.fromkeys(names)), state, active, timeout, float(settle))


class WaitProgress:
    """The units a wait still waits for, judged against `view` (kept current by the handler's
    follower) after every change."""

    def __init__(self, view: View, ask: WaitAsk) -> None:
        self.view, self.ask = view, ask
        self.pending: dict[str, None] = dict.fromkeys(ask.units)  # ordered: lines keep it
        self.settling: dict[str, float] = {}  # unit -> when it has been active long enough
        # active before the wait began: nothing is starting, there is nothing to settle
        self.was_active = {
            n for n in ask.units if reached(view, n, ask.state, ask.active) is not None
        }

    def judge(self, candidates: Iterable[str] | None, now: float) -> list[dict[str, Any]]:
        """The lines of the pending units among `candidates` (None: all) that reached the
        state (and stayed active `settle` seconds, for a service that may die at once) or can
        no longer reach it; those units are no longer pending."""
        lines = []
        for name in list(self.pending) if candidates is None else candidates:
            if name not in self.pending:
                continue
            line = failure(self.view, name, self.ask.state)
            if line is None:
                line = reached(self.view, name, self.ask.state, self.ask.active)
                if line is None:
                    self.settling.pop(name, None)  # not (or no longer) there: start again
                    continue
                if self._must_settle(name, line):
                    if now < self.settling.setdefault(name, now + self.ask.settle):
                        continue
            self.settling.pop(name, None)
            del self.pending[name]
            lines.append(line)
        return lines

    def _must_settle(self, name: str, line: dict[str, Any]) -> bool:
        return (
            self.ask.active
            and self.ask.settle > 0
            and not line.get("global")
            and name not in self.was_active
            and settles(self.view, name)
        )

    def next_deadline(self) -> float | None:
        """When the first settling unit has been active long enough (None: none settles)."""
        return min(self.settling.values(), default=None)

    def due(self, now: float) -> list[str]:
        """The settling units whose moment is over at `now`, to be judged again."""
        return sorted(n for n, t in self.settling.items() if t <= now)

    def unplaced(self) -> set[str]:
        """Pending units that want a machine and have none: the ones the engine's planner is
        asked about. Waiting for inactive never needs a machine; a global unit has none."""
        if self.ask.state is JobState.INACTIVE:
            return set()
        return {
            n for n in self.pending
            if (job := self.view.jobs.get(n)) is not None
            and job.desired is not JobState.INACTIVE
            and n not in self.view.placements
            and not is_global(self.view, job)
        }  # fmt: skip

    def placement_may_change(self, step: Step) -> bool:
        """Whether `step` may change where the pending units can go, so the planner is asked
        again: machines came, went or changed metadata, or a pending unit's job changed (its
        content, and so its [X-Fleet] rules)."""
        return (
            step.everything
            or step.machines
            or any(
                isinstance(e, Changed) and e.kind is KeyKind.JOB and e.ident in self.pending
                for e in step.events
            )
        )

    def unschedulable(self, reasons: Mapping[str, str]) -> list[dict[str, Any]]:
        """The lines of the pending units the planner places nowhere (`reasons`: its words for
        each), in name order; a unit placed meanwhile is waited for on."""
        lines = []
        for name in sorted(reasons):
            if name in self.pending and name not in self.view.placements:
                del self.pending[name]
                lines.append(unschedulable(self.view, name, reasons[name]))
        return lines

    def final(self, unplaced: Callable[[], Mapping[str, str]]) -> dict[str, Any]:
        """The last line: the units still pending, each with fleet's current state and why it
        is pending (`unplaced`: the planner's reasons, asked only if a unit has no machine)."""
        view = self.view
        return {
            "done": True,
            "pending": [
                {
                    "name": name,
                    "currentState": (
                        current_state(view, view.jobs[name]) if name in view.jobs else None
                    ),
                    "reason": pending_reason(view, name, unplaced),
                }
                for name in self.pending
            ],
        }
