"""One machine's copies, read as the records they copy: what lets an agent follow only its own
key range and still fold the registry with the one fold (`fold.py`). Pure.

The engine leader copies, for each machine, the units placed on it with their job's content
hash and desired state (`placed/<machine>/<name>`, an `Assignment`), and the Global units' jobs
for everyone (`global/<name>`, a `GlobalJob`). An agent follows those, its own machine's keys,
the rollouts and the restart requests — nothing about other machines' units — and
`LocalCopies` turns what it reads into the documents and events of the records (`job/`,
`schedule/`), so the agent's view is a `ClusterView` like any other, holding only what
concerns its machine: its planner and relevance index are the same code whether the view is
the whole cluster or this machine's part of it.

A unit both placed here and Global (a unit turning Global is unscheduled by the engine right
after) is the placed one's job until its copy goes. Restart requests of other machines are
dropped: they are the one kind an agent reads a whole range of that is not all its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleetd.model import Assignment, GlobalJob, Placement, RestartRequest
from fleetd.registry.fold import Changed, Event, Removed
from fleetd.registry.keys import KeyKind

__all__ = ["LocalCopies"]


class LocalCopies:
    """The copies one machine's agent has read, and their translation into the records."""

    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        self.placed: dict[str, Assignment] = {}
        self.globals: dict[str, GlobalJob] = {}

    def reset(self, documents: Iterable[Any]) -> list[Any]:
        """Start again from a listing's documents: the records' documents they stand for."""
        self.placed, self.globals = {}, {}
        out: list[Any] = []
        for doc in documents:
            match doc:
                case Assignment() if doc.machine_id == self.machine_id:
                    self.placed[doc.name] = doc
                case Assignment():
                    pass  # another machine's (not in this agent's range: written by hand)
                case GlobalJob():
                    self.globals[doc.name] = doc
                case RestartRequest() if doc.machine_id != self.machine_id:
                    pass
                case _:
                    out.append(doc)
        for name, a in self.placed.items():
            out += [a.job, Placement(name, self.machine_id)]
        out += [g.job for name, g in self.globals.items() if name not in self.placed]
        return out

    def translate(self, event: Event) -> list[Event]:
        """The records' events an event of this machine's ranges stands for."""
        me = self.machine_id
        match event:
            case Changed(revision=rev, kind=KeyKind.PLACED, ident=(machine, name), doc=doc):
                if machine != me:
                    return []
                self.placed[name] = doc
                return [
                    Changed(rev, KeyKind.JOB, name, doc.job),
                    Changed(rev, KeyKind.SCHEDULE, name, Placement(name, me)),
                ]
            case Removed(revision=rev, kind=KeyKind.PLACED, ident=(machine, name)):
                if machine != me or self.placed.pop(name, None) is None:
                    return []
                out: list[Event] = [Removed(rev, KeyKind.SCHEDULE, name)]
                g = self.globals.get(name)
                out.append(
                    Changed(rev, KeyKind.JOB, name, g.job)
                    if g is not None
                    else Removed(rev, KeyKind.JOB, name)
                )
                return out
            case Changed(revision=rev, kind=KeyKind.GLOBAL, ident=name, doc=doc):
                self.globals[name] = doc
                return [] if name in self.placed else [Changed(rev, KeyKind.JOB, name, doc.job)]
            case Removed(revision=rev, kind=KeyKind.GLOBAL, ident=name):
                if self.globals.pop(name, None) is None or name in self.placed:
                    return []
                return [Removed(rev, KeyKind.JOB, name)]
            case (
                Changed(kind=KeyKind.RESTART, ident=(_, machine))
                | Removed(kind=KeyKind.RESTART, ident=(_, machine))
            ) if machine != me:
                return []
        return [event]

    @property
    def names(self) -> set[str]:
        """The units this machine holds or may hold: placed here, and the Global ones."""
        return self.placed.keys() | self.globals.keys()
