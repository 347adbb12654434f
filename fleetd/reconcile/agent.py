"""The agent's plan: what should run on this machine vs what does → ordered systemd tasks.

Pure: the shell reads desired state from etcd and actual state from the units directory and
systemd, calls `plan_agent`, and applies the tasks in the order given (fleet's order: stop what
must stop, remove what must go, write what is new or changed, then start, then restart). Every
task is one thing the shell does: a WRITE writes the unit's file and links it, an UNLINK
unlinks it, and the systemd adapter reloads once for all the links and unlinks of a plan, so
no task asks for the reload.

Restarts are level-based: a unit carries the token of the restart last requested on this
machine (`DesiredUnit.restart`) and the token this machine last did (`ActualUnit.restarted`);
while they differ and the unit was started, it is restarted once. A start also does the
pending request (the unit gets a new process after the request was made either way).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from fleetd.model import JobState
from fleetd.reconcile.globals import globals_on, runs_globally
from fleetd.reconcile.publish import SystemdWord
from fleetd.reconcile.states import RUNNING_STATES
from fleetd.unit import Requirements

__all__ = [
    "ActualUnit",
    "AgentJob",
    "AgentTask",
    "DesiredUnit",
    "Kind",
    "Why",
    "actual_units",
    "desired_units",
    "plan_agent",
]


@dataclass(frozen=True, slots=True)
class AgentJob:
    """A job as the agent sees it: content hash, desired state and [X-Fleet] requirements."""

    name: str
    hash: str
    desired: JobState
    requirements: Requirements = field(default_factory=Requirements)


@dataclass(frozen=True, slots=True)
class DesiredUnit:
    name: str
    hash: str
    launched: bool  # started (desired launched) or only loaded
    restart: str = ""  # token of the restart requested for this unit on this machine


@dataclass(frozen=True, slots=True)
class ActualUnit:
    """A fleet unit on this machine: its file in the units dir and what systemd says."""

    name: str
    hash: str  # of the file in the units directory
    active: str = "inactive"  # systemd ActiveState
    # The agent has started this content (or adopted it running or failed): it is not started
    # again, so a unit that fails stays failed (systemd's Restart= decides) instead of looping.
    started: bool = False
    restarted: str = ""  # token of the last restart request done here


class Kind(IntEnum):
    """Task kinds, in the order they are applied."""

    STOP = 1
    UNLINK = 2  # unlink the unit's file (and forget its published state)
    WRITE = 3  # write the unit's file and link it
    START = 4
    RESTART = 5


class Why(StrEnum):
    NOT_PLACED_HERE = "unit is no longer placed on this machine"
    CONTENT_CHANGED = "unit content changed (hash differs from the file on disk)"
    NEWLY_PLACED = "unit was placed on this machine"
    DESIRED_LAUNCHED = "desired state is launched"
    DESIRED_LOADED = "desired state is loaded, unit was started"
    RESTART_REQUESTED = "a restart was requested (its token is not the last one done here)"


@dataclass(frozen=True, slots=True)
class AgentTask:
    kind: Kind
    unit: str
    reason: Why
    hash: str = ""  # the content to write, for WRITE
    token: str = ""  # the restart request a START or RESTART does (done once it succeeded)


def desired_units(
    machine_id: str,
    metadata: Mapping[str, str],
    jobs: Mapping[str, AgentJob],
    placements: Mapping[str, str],
    restarts: Mapping[str, str] | None = None,
    running: Collection[str] = (),
) -> dict[str, DesiredUnit]:
    """Units this machine should hold: those placed here, plus the Global units it qualifies for.

    Where a Global unit runs is `globals_on`'s rule, asked with the units placed here: they
    keep this machine when a Global unit conflicts with them (the engine moves them away).
    `restarts` gives the token of the restart requested on this machine, by unit name;
    `running` the units this machine runs with their current content (a Global unit among them
    keeps running when the machine turns out smaller: it is not stopped for room).
    """
    restarts = restarts or {}
    desired: dict[str, DesiredUnit] = {}
    for name, machine in placements.items():
        job = jobs.get(name)
        if machine == machine_id and job is not None and job.desired is not JobState.INACTIVE:
            desired[name] = _desired(job, restarts)
    candidates = {
        name: job.requirements
        for name, job in jobs.items()
        if runs_globally(job.desired, job.requirements)
    }
    placed = {name: jobs[name].requirements for name in desired}
    for name in globals_on(metadata, candidates, placed, running):
        desired[name] = _desired(jobs[name], restarts)
    return desired


def _desired(job: AgentJob, restarts: Mapping[str, str]) -> DesiredUnit:
    return DesiredUnit(
        job.name, job.hash, job.desired is JobState.LAUNCHED, restarts.get(job.name, "")
    )


def actual_units(
    files: Mapping[str, str],
    said: Mapping[str, SystemdWord],
    started: Collection[str],
    restarted: Mapping[str, str],
) -> dict[str, ActualUnit]:
    """The fleet units on this machine: one per file in the units dir (`files`: name → hash of
    its content), with what systemd said of it last (`said`; never a word: inactive), whether
    the agent started it and the last restart token done here."""
    return {
        name: ActualUnit(
            name,
            unit_hash,
            said[name].active if name in said else "inactive",
            name in started,
            restarted.get(name, ""),
        )
        for name, unit_hash in files.items()
    }


def plan_agent(
    desired: Mapping[str, DesiredUnit], actual: Mapping[str, ActualUnit]
) -> list[AgentTask]:
    """Ordered tasks that make `actual` match `desired`; none for units already right."""
    tasks: list[AgentTask] = []
    for name in sorted(set(desired) | set(actual)):
        want, have = desired.get(name), actual.get(name)
        if want is None:
            assert have is not None
            if have.active in RUNNING_STATES:
                tasks.append(AgentTask(Kind.STOP, name, Why.NOT_PLACED_HERE))
            tasks.append(AgentTask(Kind.UNLINK, name, Why.NOT_PLACED_HERE))
        elif have is None:
            tasks.append(AgentTask(Kind.WRITE, name, Why.NEWLY_PLACED, want.hash))
            if want.launched:
                tasks.append(AgentTask(Kind.START, name, Why.NEWLY_PLACED, token=want.restart))
        elif have.hash != want.hash:
            if have.active in RUNNING_STATES:
                tasks.append(AgentTask(Kind.STOP, name, Why.CONTENT_CHANGED))
            tasks.append(AgentTask(Kind.WRITE, name, Why.CONTENT_CHANGED, want.hash))
            if want.launched:
                tasks.append(AgentTask(Kind.START, name, Why.CONTENT_CHANGED, token=want.restart))
        elif want.launched and not have.started:
            tasks.append(AgentTask(Kind.START, name, Why.DESIRED_LAUNCHED, token=want.restart))
        elif want.launched and want.restart and want.restart != have.restarted:
            tasks.append(AgentTask(Kind.RESTART, name, Why.RESTART_REQUESTED, token=want.restart))
        elif not want.launched and (have.started or have.active in RUNNING_STATES):
            # also a unit that ran and failed or exited: stopping it resets it, so the next
            # start runs it again and a failure from before is not taken for a new one
            tasks.append(AgentTask(Kind.STOP, name, Why.DESIRED_LOADED))
    tasks.sort(key=lambda t: (t.kind, t.unit))
    return tasks
