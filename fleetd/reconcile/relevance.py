"""Which registry events concern whom: the jobs one machine's agent looks at, and the events
that can change the engine's plan. Pure: the shells follow the registry and ask here.

An agent looks only at the jobs placed on its machine and at the Global ones, so a plan costs
what the machine holds, not the size of the cluster, and an event about other machines' units
costs it no plan at all (a bulk submit elsewhere). `LocalJobs` keeps those names current as
events arrive. A job whose content has not arrived yet may be Global: it stays "unsure", and
matters here, until its content says.

A running rollout pins the units it covers on this machine to a version (`pinned_hash`): the
agent runs that content, not the job's. A rollout or a drain (`Cordon`) matters here when it
names a unit held here or a target on this machine — now or in its last version (`concerned`
remembers which did), so the event that moves this machine's target on is never missed.

Every method takes the view *after* the event was folded into it: the follower folds a whole
watch batch before it hands the events over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fleetd.model import Cordon, Job, Rollout
from fleetd.reconcile.agent import AgentJob, DesiredUnit, desired_units
from fleetd.reconcile.drain import stops_globals
from fleetd.reconcile.gates import pinned_hash
from fleetd.reconcile.globals import globals_refused, runs_globally
from fleetd.reconcile.states import RUNNING_STATES
from fleetd.registry.fold import Changed, ClusterView, Event, Removed, Resync
from fleetd.registry.keys import COPIES, KeyKind
from fleetd.registry.metadata import effective_metadata
from fleetd.rules.update import UpdatePolicy
from fleetd.unit import Requirements, UnitNameError, parse_name, validate_name

__all__ = ["LocalJobs", "about_leader", "deposed", "moves_jobs", "replans"]


class LocalJobs:
    """The jobs that concern one machine: placed on it, Global, or not known yet to be either
    (`unsure`: their content has not arrived), with their requirements read once per content."""

    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        self.placed: set[str] = set()  # jobs placed on this machine
        self.globals: set[str] = set()  # jobs whose unit is Global
        self.unsure: set[str] = set()  # jobs whose content is not known yet
        # Job names that can be no file name (``../x.service``, written to etcd by something
        # else than the API): never held here, and reported once (`take_refusals`).
        self.refused: dict[str, str] = {}
        self._unreported: list[str] = []
        # Global units that should run and that this machine's rules keep off it, with why
        # (as of the last `desired`): the agent reports each change.
        self.kept_off: dict[str, str] = {}
        # the update policy of each unit this machine should hold (as of the last `desired`):
        # what `gates_on` asks
        self.policies: dict[str, UpdatePolicy] = {}
        # the rollouts (by name) and drains (by machine) that named a unit held here or a
        # target on this machine in the version last seen
        self.concerned: set[tuple[KeyKind, str]] = set()
        self._requirements: dict[tuple[str, str], Requirements] = {}

    def note(self, view: ClusterView, event: Event | None) -> bool:
        """Keep the index current with `event` (None: the first snapshot); returns whether it
        may change what this machine should hold."""
        me = self.machine_id
        match event:
            case None | Resync():
                self.placed = {n for n, m in view.placements.items() if m == me}
                self.globals = set()
                self.unsure = set(view.jobs)
                self.concerned = {
                    (kind, ident)
                    for kind, docs in (
                        (KeyKind.ROLLOUT, view.rollouts),
                        (KeyKind.CORDON, view.cordons),
                    )
                    for ident, doc in docs.items()
                    if self._names_me(doc)
                }
                return True
            case Changed(kind=KeyKind.SCHEDULE, ident=name, doc=placement):
                was = name in self.placed
                if placement.machine_id == me:
                    self.placed.add(name)
                    return True
                self.placed.discard(name)
                return was
            case Removed(kind=KeyKind.SCHEDULE, ident=name):
                was = name in self.placed
                self.placed.discard(name)
                return was
            case Changed(kind=KeyKind.JOB, ident=name):
                return self.classify(view, name) or name in self.placed
            case Removed(kind=KeyKind.JOB, ident=name):
                was = name in self.placed or name in self.globals or name in self.unsure
                self.globals.discard(name)
                self.unsure.discard(name)
                return was
            case Changed(kind=KeyKind.UNIT):
                return bool(self.unsure)  # the content a job waited for may have come
            case (
                Changed(kind=KeyKind.MACHINE | KeyKind.MACHINE_META, ident=machine_id)
                | Removed(kind=KeyKind.MACHINE | KeyKind.MACHINE_META, ident=machine_id)
            ):
                return machine_id == me  # this machine's metadata: which Global units run here
            case (
                Changed(kind=KeyKind.CORDON, ident=machine_id)
                | Removed(kind=KeyKind.CORDON, ident=machine_id)
            ) if machine_id == me:
                return True  # this machine's drain: drained with stop_globals, no Global unit
            case (
                Changed(kind=KeyKind.RESTART, ident=(_, machine_id))
                | Removed(kind=KeyKind.RESTART, ident=(_, machine_id))
            ):
                return machine_id == me
            case Changed(kind=KeyKind.ROLLOUT | KeyKind.CORDON as kind, ident=ident, doc=doc):
                was = (kind, ident) in self.concerned
                if self._names_me(doc):
                    self.concerned.add((kind, ident))
                    return True
                self.concerned.discard((kind, ident))
                return was
            case Removed(kind=KeyKind.ROLLOUT | KeyKind.CORDON as kind, ident=ident):
                was = (kind, ident) in self.concerned
                self.concerned.discard((kind, ident))
                return was
        return False  # states, the leader, a content deleted (its jobs' requirements are kept)

    def _names_me(self, doc: Rollout | Cordon) -> bool:
        """Whether a rollout or a drain names a target on this machine or a unit held here
        (a rollout: the Global unit itself or an instance of the template)."""
        me = self.machine_id
        if any(t.machine_id == me for t in doc.targets):
            return True
        held = self.placed | self.globals
        if isinstance(doc, Cordon):
            return any(t.unit in held for t in doc.targets)
        return doc.name in held or (
            "@." in doc.name and any(_template_of(name) == doc.name for name in held)
        )

    def classify(self, view: ClusterView, name: str) -> bool:
        """Sort a job into Global or not (`unsure` while its content is unknown); returns
        whether it matters here: Global now or before, or still unsure."""
        was = name in self.globals
        job = view.jobs.get(name)
        req = self.requirements(view, name, job) if job is not None else None
        if job is not None and req is None and name not in self.refused:
            self.unsure.add(name)  # its content has not arrived yet: ask again later
            return True
        self.unsure.discard(name)
        if req is not None and req.is_global:
            self.globals.add(name)
            return True
        self.globals.discard(name)
        return was

    def requirements(
        self, view: ClusterView, name: str, job: Job, unit_hash: str | None = None
    ) -> Requirements | None:
        """The job's requirements (those of the content `unit_hash` if given, else the job's
        own); None for a refused name or a content not (yet) known."""
        unit_hash = unit_hash or job.unit_hash
        key = (unit_hash, name)
        req = self._requirements.get(key)
        if req is None:
            if name in self.refused or not self._valid_name(name):
                return None
            content = view.units.get(unit_hash)
            if content is None:
                return None
            req = self._requirements[key] = content.unit.requirements(name)
        return req

    def jobs(self, view: ClusterView) -> dict[str, AgentJob]:
        """The jobs placed here and the Global ones, as the agent's planner takes them; the
        unsure ones are sorted first (their content may have come meanwhile). A unit a rollout
        pins on this machine comes with the pinned content (and its requirements, those of
        the job's content while the pinned one is not known: the file on disk may be it)."""
        for name in list(self.unsure):
            self.classify(view, name)
        jobs: dict[str, AgentJob] = {}
        for name in self.placed | self.globals:
            job = view.jobs.get(name)
            req = self.requirements(view, name, job) if job is not None else None
            if job is None or req is None:
                continue
            unit_hash = job.unit_hash
            if view.rollouts and (pinned := pinned_hash(view, name, self.machine_id)):
                unit_hash = pinned
                req = self.requirements(view, name, job, pinned) or req
            jobs[name] = AgentJob(name, unit_hash, job.desired, req)
        return jobs

    def desired(
        self, view: ClusterView, configured_metadata: Mapping[str, str]
    ) -> dict[str, DesiredUnit]:
        """What this machine should hold (`desired_units` of the jobs that concern it), with
        its metadata as the cluster sees it and the restarts requested here."""
        me = self.machine_id
        jobs = self.jobs(view)
        if view.cordons and stops_globals(view, me):
            jobs = {name: job for name, job in jobs.items() if name not in self.globals}
        restarts = {
            name: request.token
            for name in jobs
            if (request := view.restarts.get((name, me))) is not None
        }
        metadata = effective_metadata(view, me, configured_metadata)
        running = {
            name
            for name, job in jobs.items()
            if (state := view.states.get((name, me))) is not None
            and state.hash == job.hash
            and state.active in RUNNING_STATES
        }
        desired = desired_units(
            me, metadata, jobs, dict.fromkeys(self.placed, me), restarts, running
        )
        self.policies = {name: jobs[name].requirements.update for name in desired}
        candidates = {
            name: job.requirements
            for name, job in jobs.items()
            if runs_globally(job.desired, job.requirements)
        }
        if candidates.keys() - desired.keys():  # some Global unit does not run here: say why
            placed = {n: jobs[n].requirements for n in desired if n not in candidates}
            self.kept_off = globals_refused(metadata, candidates, placed, running)
        else:
            self.kept_off = {}
        return desired

    def take_refusals(self) -> list[tuple[str, str]]:
        """The names refused since the last call, with why (the shell warns once of each)."""
        out = [(name, self.refused[name]) for name in self._unreported]
        self._unreported.clear()
        return out

    def _valid_name(self, name: str) -> bool:
        try:
            validate_name(name)
        except UnitNameError as err:
            self.refused[name] = str(err)
            self._unreported.append(name)
            return False
        return True


def _template_of(name: str) -> str:
    try:
        return parse_name(name).template
    except UnitNameError:
        return ""


# ---- the engine: which events can change a plan


def moves_jobs(event: Event) -> bool:
    """Whether an event can change the engine's plan: states, restart requests and the agents'
    copies never move jobs (and a placement event that changed nothing — the echo of the
    engine's own write, already recorded by `record_won` — never comes: the fold drops it)."""
    return isinstance(event, Resync) or event.kind not in _NEVER_MOVE


# States and restart requests never move jobs; nor do the agents' copies (the engine's own
# writes, planned from the records they copy: `reconcile/index.py`).
_NEVER_MOVE = frozenset((KeyKind.STATE, KeyKind.RESTART)) | COPIES


def about_leader(event: Event) -> bool:
    """Whether an event may have changed who leads the engines."""
    return isinstance(event, Resync) or event.kind is KeyKind.LEADER


def replans(events: Sequence[Event]) -> bool:
    """Whether a batch calls for a new plan: the first snapshot (no events), or an event that
    can move jobs."""
    return not events or any(moves_jobs(e) for e in events)


def deposed(view: ClusterView, events: Sequence[Event], machine_id: str) -> bool:
    """Whether a batch tells the engine of `machine_id` it no longer leads: the leader key is
    gone or names another engine."""
    if not any(about_leader(e) for e in events):
        return False
    return view.leader is None or view.leader.machine_id != machine_id
