"""What `fleetctl stop`, `unload`, `destroy` and `restart` do, decided before anything is sent.

fleet's runStopUnit, runUnloadUnit, runDestroyUnit and (with fleetd's rolling restart of
Global units) runRestartUnit as pure functions: the CLI lists the registered units, hands the
ones the arguments name to a planner, then carries the plan out — sets desired states,
destroys, asks machines to restart, waits — and prints its lines. So which unit is skipped,
refused, waited for and for what, and every line these commands print in fleet's words, can
be tested on plain values (tests/reconcile/test_lifecycle.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fleetd.reconcile.submit import Line
from fleetd.unit import mangle_name

__all__ = [
    "NOT_FOUND",
    "TARGETS",
    "DestroyPlan",
    "Listed",
    "Restart",
    "RestartPlan",
    "Rolling",
    "SetState",
    "Step",
    "TargetPlan",
    "named_units",
    "plan_destroy",
    "plan_restart",
    "plan_rolling_restart",
    "plan_target",
]

T = TypeVar("T")

# fleet's line when no argument names a registered unit: stop, unload and destroy exit 0 after
# it (the end state holds: nothing is left to stop), restart fails with it.
NOT_FOUND = "Units not found in registry"
# The desired state stop and unload bring a unit to, and fleet's word for having done it.
TARGETS = {"stop": ("loaded", "stopped"), "unload": ("inactive", "unloaded")}


@dataclass(frozen=True)
class Listed:
    """A registered unit as the API lists it: what these commands decide on."""

    name: str
    desired: str = "inactive"  # fleet's desiredState
    current: str = ""  # fleet's currentState: what the engine made of it (a Global unit: none)
    is_global: bool = False
    machine: str = ""  # the machine it is placed on (fleet's machineID), if any


def named_units(args: Iterable[str], registered: Mapping[str, T]) -> list[T]:
    """fleet's findUnits: the registered units (by name) the arguments name, once each, in
    the order first named; a name the registry does not know is skipped."""
    names = dict.fromkeys(mangle_name(arg) for arg in args)
    return [registered[name] for name in names if name in registered]


# --- stop, unload ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SetState:
    """A unit whose desired state is set, and what is said once it is (the first failure to
    set one ends the command, so a line is only printed for a unit set)."""

    name: str
    triggered: Line | None = None  # a Global unit: said to be triggered, never waited for


@dataclass(frozen=True)
class TargetPlan:
    """What a stop or unload does, in the order the CLI does it. Nothing is sent when `done`
    is empty (no unit found) or `refusal` is set."""

    verb: str  # stop, unload
    state: str  # the desired state the units are set to
    notes: tuple[Line, ...] = ()  # printed first (fleet's "Units not found in registry")
    refusal: str = ""  # the command fails with it and sends nothing
    set: tuple[SetState, ...] = ()  # sent together
    units: tuple[str, ...] = ()  # the non-global units set: waited for, named in the last line
    wait: bool = True  # False with --no-block: they are said to be triggered instead
    triggered: tuple[Line, ...] = ()  # --no-block: printed instead of waiting
    done: tuple[Line, ...] = ()  # printed last, once every unit got there (or --no-block)

    def failure(self, errors: Sequence[str]) -> str:
        """fleet's message when the wait ended with `errors` (fleet's error lines of the units
        that did not get there): one line each, then which units the command failed on."""
        lines = [f"Error waiting for units: {e}" for e in errors]
        lines.append(f"Failed to {self.verb} units [{' '.join(self.units)}]. err: {errors[0]}")
        return "\n".join(lines)


def plan_target(verb: str, units: Sequence[Listed], *, block: bool = True) -> TargetPlan:
    """The plan of `fleetctl stop|unload [--no-block] args...` over the units the arguments
    name (`named_units`).

    A unit the engine already has in the state, and wanted there, is skipped: it is neither set
    nor waited for nor named in fleet's last line. A unit that waits for a machine (the engine
    has it inactive, its desired state is not) is unloaded all the same — fleet skipped it, so
    a pending unit could not be taken back — set, with nothing to wait for. stop refuses a unit
    that is not even loaded (fleet's "Unable to stop unit X in state inactive"), before anything
    is sent. A Global unit has no current state of its own (it runs on many machines): it is
    always set, never waited for.
    """
    state, done = TARGETS[verb]
    if not units:
        return TargetPlan(verb, state, notes=(Line(NOT_FOUND, stderr=True),))
    changes: list[Listed] = []
    there: set[str] = set()  # set, but already in the state: nothing to wait for
    for unit in units:
        if not unit.is_global:
            if verb == "stop" and unit.current == "inactive":
                refusal = f"Unable to stop unit {unit.name} in state inactive"
                return TargetPlan(verb, state, refusal=refusal)
            if unit.current == state:
                if unit.desired == state:
                    continue  # already there
                there.add(unit.name)
        changes.append(unit)
    named = tuple(u.name for u in changes if not u.is_global)
    waited = tuple(n for n in named if n not in there)
    return TargetPlan(
        verb, state,
        set=tuple(SetState(u.name, _global_triggered(u, verb)) for u in changes),
        units=waited,
        wait=block,
        triggered=() if block else tuple(Line(f"Triggered unit {n} {verb}") for n in named),
        done=(Line(f"Successfully {done} units [{' '.join(named)}].", stderr=True),),
    )  # fmt: skip


def _global_triggered(unit: Listed, verb: str) -> Line | None:
    return Line(f"Triggered global unit {unit.name} {verb}") if unit.is_global else None


# --- destroy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DestroyPlan:
    """The units a destroy deletes, or fleet's line when there are none (exit 0).

    Deleting is synchronous in the registry: once the API answered, the unit is gone, so there
    is nothing to wait for (--no-block and --block-attempts are accepted for fleet's sake)."""

    notes: tuple[Line, ...] = ()
    destroy: tuple[str, ...] = ()

    def report(self, errors: Sequence[str | None]) -> tuple[tuple[Line, ...], str]:
        """What is said once the API answered, given its error (or None) for each unit of
        `destroy`: fleet's line for each unit destroyed, and the failure of the others (every
        one said, the command fails) or "" when all went."""
        lines = tuple(
            Line(f"Destroyed {name}")
            for name, error in zip(self.destroy, errors, strict=True)
            if error is None
        )
        failed = [f"Error destroying units: {e}" for e in errors if e is not None]
        return lines, "\n".join(failed)


def plan_destroy(units: Sequence[Listed]) -> DestroyPlan:
    """The plan of `fleetctl destroy args...` over the units the arguments name: each of them,
    Global or not, in whatever state."""
    if not units:
        return DestroyPlan(notes=(Line(NOT_FOUND, stderr=True),))
    return DestroyPlan(destroy=tuple(u.name for u in units))


# --- restart ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A desired state a restarted unit is set to, then waited for."""

    state: str
    active: bool = False  # waited for until systemd reports it active (and still, --settle)
    triggered: Line | None = None  # --no-block: printed instead of waiting


@dataclass(frozen=True)
class Restart:
    """How one unit is restarted: through its desired states, one step after another (a
    non-global unit), machine by machine (`rolling`: a Global unit, `plan_rolling_restart`
    once its machines are known), or not at all (`problem`)."""

    name: str
    steps: tuple[Step, ...] = ()
    rolling: bool = False
    problem: str = ""  # reported with the others' once every unit had its turn (exit 1)


@dataclass(frozen=True)
class RestartPlan:
    """The units of a restart, one after another in the order named (a rolling restart:
    never two down at once), or fleet's refusal when none is registered (exit 1, unlike stop,
    unload and destroy)."""

    refusal: str = ""
    units: tuple[Restart, ...] = ()


def plan_restart(units: Sequence[Listed], *, block: bool = True) -> RestartPlan:
    """The plan of `fleetctl restart [--no-block] args...` over the units the arguments name.

    A non-global unit is stopped and started again through its desired state, `loaded` then
    `launched`, each waited for as stop and start do (a loaded unit is only started, one
    not even loaded is refused in fleet's words). A Global unit runs on many machines and
    has no state of its own to go through: it is restarted in place on each of its machines
    if it is meant to run (desired `launched`), else refused.
    """
    if not units:
        return RestartPlan(refusal=NOT_FOUND)
    plan: list[Restart] = []
    for unit in units:
        if unit.is_global:
            if unit.desired == "launched":
                plan.append(Restart(unit.name, rolling=True))
            else:
                problem = f"Unable to restart unit {unit.name} in state {unit.desired}"
                plan.append(Restart(unit.name, problem=problem))
        elif unit.current == "inactive":
            problem = f"Unable to restart unit {unit.name} in state inactive"
            plan.append(Restart(unit.name, problem=problem))
        else:
            states = ("launched",) if unit.current == "loaded" else ("loaded", "launched")
            plan.append(Restart(unit.name, tuple(_step(unit.name, s, block) for s in states)))
    return RestartPlan(units=tuple(plan))


def _step(name: str, state: str, block: bool) -> Step:
    said = None if block else Line(f"Triggered unit {name} restart")
    return Step(state, active=state == "launched", triggered=said)


@dataclass(frozen=True)
class Rolling:
    """How a Global unit is restarted: on each machine that reports it, in machine ID order,
    one at a time — each waited for until the unit is active there again, before the next is
    asked; the first failure ends the command and the machines after it are left alone. With
    --no-block every machine is asked at once and none waited for."""

    name: str
    machines: tuple[str, ...] = ()
    problem: str = ""  # no machine runs it: reported with the other units' problems
    wait: bool = True
    triggered: tuple[Line, ...] = ()  # --no-block: fleet's one line, once every machine is asked

    def restarted(self, legend: str) -> Line:
        """Said once it is active again on the machine `legend` shows (`5ab7f3b4.../ip`)."""
        return Line(f"Unit {self.name} restarted on {legend}")

    def stopped_at(
        self,
        machine: str,
        reason: str,
        legends: Mapping[str, str],
        untouched: Iterable[str] | None = None,
    ) -> str:
        """The failure of the rolling restart on `machine` (`reason`: systemd's words, or the
        API's), naming the machines it did not get to (`untouched`; by default those after
        `machine` in order)."""
        errors = [f"Error restarting unit {self.name} on {legends[machine]}: {reason}"]
        if untouched is None:
            rest = self.machines[self.machines.index(machine) + 1 :]
        else:
            rest = tuple(m for m in self.machines if m in set(untouched))
        if rest:
            errors.append(
                f"Unit {self.name} was not restarted on {' '.join(legends[m] for m in rest)} "
                "(stopped at the first failure)"
            )
        return "\n".join(errors)

    def unasked(self, failures: Mapping[str, str]) -> str:
        """--no-block: the failure naming each machine whose request the API refused (its
        message by machine ID), or "" when every one was asked."""
        return "\n".join(
            f"Error restarting unit {self.name} on {machine}: {failures[machine]}"
            for machine in self.machines
            if machine in failures
        )


def plan_rolling_restart(name: str, machines: Iterable[str], *, block: bool = True) -> Rolling:
    """The rolling restart of the Global unit `name` over the machines that report a state of
    it (`list-units`): those are the machines whose systemd has it."""
    order = tuple(sorted(set(machines)))
    if not order:
        return Rolling(name, problem=f"Unable to restart global unit {name}: no machine runs it")
    if block:
        return Rolling(name, order)
    triggered = Line(f"Triggered global unit {name} restart")
    return Rolling(name, order, wait=False, triggered=(triggered,))
