"""Which machine answers for a unit's `systemctl status` and journal (`x/units/{name}/status`,
`/journal`) and whose state `/state/{name}` shows, or fleet's refusal, decided without I/O.

Only a machine whose systemd has the unit can say anything of it: the placed machine of a unit
fleet calls loaded or launched, every machine that published a state of a global unit. A
journal is one machine's: a global unit's must be named (`?machineID=`). The messages are in
the words fleetctl used for the same cases ("Unit x does not appear to be running.").
"""

from __future__ import annotations

from fleetd.model import JobState, UnitState
from fleetd.reconcile.globals import is_global
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.waiting import View, current_state

__all__ = ["journal_machine", "shown_state", "status_machines"]


def status_machines(view: View, name: str) -> list[str] | Refuse:
    """The machines whose `systemctl status` of `name` is shown, in machine ID order."""
    return _machines(view, name, "loaded")


def journal_machine(view: View, name: str, wanted: str | None) -> str | Refuse:
    """The machine whose journal of `name` is shown; `wanted` is the `machineID` the request
    names (only a global unit needs one, and it must run the unit)."""
    machines = _machines(view, name, "running")
    if isinstance(machines, Refuse):
        return machines
    if not is_global(view, view.jobs[name]):
        return machines[0]
    if not wanted:
        return Refuse(
            400,
            f"Unable to retrieve journal of global unit {name}: "
            f"name a machine with ?machineID= (one of {', '.join(machines)}).",
        )
    if wanted not in machines:
        return Refuse(409, f"Unit {name} does not appear to be running on {wanted}.")
    return wanted


def shown_state(view: View, name: str) -> UnitState | Refuse:
    """The one state `GET /state/{name}` shows of `name`: its placed machine's, which is what
    systemd does with the unit now; else (a global unit, or one its machine has not reported
    yet) the first machine's by ID, so the answer is the same each time."""
    machine_id = view.placements.get(name)
    if machine_id is not None and (name, machine_id) in view.states:
        return view.states[(name, machine_id)]
    reported = sorted(m for (n, m) in view.states if n == name)
    if not reported:
        return Refuse(404, "unit state does not exist")
    return view.states[(name, reported[0])]


def _machines(view: View, name: str, verb: str) -> list[str] | Refuse:
    """The machines whose systemd has `name` (every one for a global unit)."""
    job = view.jobs.get(name)
    if job is None:
        return Refuse(404, f"Unit {name} does not exist.")
    if is_global(view, job):
        machines = sorted({m for (n, m) in view.states if n == name})
    elif current_state(view, job) == JobState.INACTIVE:
        machines = []
    else:
        machines = [view.placements[name]]
    if not machines:
        return Refuse(409, f"Unit {name} does not appear to be {verb}.")
    return machines
