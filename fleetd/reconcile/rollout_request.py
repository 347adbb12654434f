"""The API's rollout requests, read before anything is written: `POST x/rollouts`, whether a
unit's PUT rolls a new version out, and a rollout as the API shows it. Pure; the decisions of a
rollout itself are in `rollout.py`."""

from __future__ import annotations

from dataclasses import dataclass

from fleetd.model import JobState, Rollout, RolloutAction
from fleetd.reconcile.globals import is_global
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.rollout import View
from fleetd.reconcile.unit_put import read_put
from fleetd.reconcile.unit_put import unit_of as new_unit
from fleetd.unit import UnitFile
from fleetd.unit_names import UnitNameError, validate_name

__all__ = ["BeginRequest", "read_begin", "rollout_json", "rolls_out"]


@dataclass(frozen=True, slots=True)
class BeginRequest:
    """`POST x/rollouts`: roll `unit` (None: a restart) over `name`."""

    name: str
    action: RolloutAction
    unit: UnitFile | None


def read_begin(body: object) -> BeginRequest | Refuse:
    """The request of `POST x/rollouts` with the decoded JSON `body`, or why it is refused:
    an object with a valid unit or template `name`, `action` update (with the new `options`,
    checked as a PUT checks them) or restart (no options)."""
    if not isinstance(body, dict):
        return Refuse(400, "unable to decode body: expected a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return Refuse(400, "unable to decode body: name must be a unit or template name")
    try:
        validate_name(name)
    except UnitNameError as err:
        return Refuse(400, str(err))
    try:
        action = RolloutAction(body.get("action", "update"))
    except ValueError:
        return Refuse(400, f"invalid action {body.get('action')!r}: expected update or restart")
    if action is RolloutAction.RESTART:
        if body.get("options"):
            return Refuse(400, "a restart rollout takes no options")
        return BeginRequest(name, action, None)
    put = read_put(name, {"options": body.get("options")})
    if isinstance(put, Refuse):
        return put
    if not put.options:
        return Refuse(400, "an update rollout needs the new version's options")
    unit = new_unit(put)
    if isinstance(unit, Refuse):
        return unit
    return BeginRequest(name, action, unit)


def rolls_out(view: View, name: str, unit: UnitFile, desired: JobState | None) -> bool:
    """Whether a PUT of new options for the unit `name` is rolled out rather than replaced
    at once: a launched Global unit (before and after) that stays launched."""
    job = view.jobs.get(name)
    if job is None or job.desired is not JobState.LAUNCHED:
        return False
    if desired not in (None, JobState.LAUNCHED):
        return False
    return is_global(view, job) and unit.requirements(name).is_global


def rollout_json(rollout: Rollout) -> dict[str, object]:
    """A rollout as the API shows it: the document and its progress line."""
    return {**rollout.to_dict(), "progress": rollout.progress}
