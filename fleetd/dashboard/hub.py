"""The dashboard's view of the cluster, kept live from the fleet API's `GET /x/events` stream.

One `Hub` thread follows that stream (fed by fleetd's registry watch) and keeps the view; every
browser's server-sent events stream (server.py, `/events`) subscribes to it and gets each change
as it is applied. It is apart from the HTTP server because it is the dashboard's only state and
its only retry: when the API cannot be reached the hub says so (a `status` event, the page's
banner) and reconnects with a capped backoff; the snapshot it gets back replaces the view.
Nothing is polled. Threads and queues of the standard library only, like the server, so
`fleetctl dashboard` keeps fleetctl's light imports.

Rollouts come in the event stream too (its `rollouts` lines): those not over go to the
browsers as a `rollouts` event (the page's Rollouts panel, with each one's progress).

Units that want a machine and have none get their reason from the API (`GET /x/unplaced`, the
planner's words), and machines that say what they offer (their `fleet.memory`, `fleet.cpus`
facts) their use (`GET /x/machines`: memory and CPUs reserved of capacity): a second thread asks
whenever a change may have altered them (a snapshot, units, machines), once for a burst of
changes, and only while some unit is unplaced, or some machine says its capacity; each new
answer goes to the browsers as an `unplaced` or a `use` event.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fleetd.api.client import APIError, Client, Unreachable

__all__ = ["Hub"]

_BACKOFF_FIRST, _BACKOFF_CAP = 0.2, 3.0  # reconnecting to an unreachable API
_CAPACITY_FACTS = ("fleet.memory", "fleet.cpus")  # a machine that says what it offers
_A = TypeVar("_A")


def wants_machine(unit: dict[str, Any]) -> bool:
    """A unit that should have a machine and has none (desired loaded or launched, not Global:
    a Global unit's JSON has no currentState)."""
    return (
        unit.get("desiredState") in ("loaded", "launched")
        and "currentState" in unit
        and not unit.get("machineID")
    )


def _not_over(rollouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rollouts still going on (running, paused, waiting for promote, reverting, stopped
    after a failure), by name."""
    over = ("done", "reverted", "cancelled")
    return sorted((r for r in rollouts if r.get("state") not in over), key=lambda r: r["name"])


def says_capacity(machine: dict[str, Any]) -> bool:
    """A machine whose facts say what it offers to units (memory or CPUs)."""
    metadata = machine.get("metadata") or {}
    return any(key in metadata for key in _CAPACITY_FACTS)


class Hub:
    """The cluster view, kept by following the API's event stream; fans it out to listeners."""

    def __init__(self, client_factory: Callable[[], Client]) -> None:
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._listeners: set[queue.Queue[tuple[str, Any] | None]] = set()
        self._stop = threading.Event()
        self.status: dict[str, Any] = {"reachable": None, "error": ""}
        self.units: dict[str, dict[str, Any]] = {}
        self.states: dict[str, list[dict[str, Any]]] = {}
        self.machines: list[dict[str, Any]] = []
        self.unplaced: dict[str, str] = {}  # unit name -> why it has no machine
        self.use: dict[str, dict[str, Any]] = {}  # machine ID -> its capacity and use
        self.rollouts: list[dict[str, Any]] = []  # rollouts not over (x/rollouts)
        self.revision = 0
        self._thread = threading.Thread(target=self._run, name="dashboard-hub", daemon=True)
        self._answers_due = threading.Event()  # a change may have altered reasons or use
        self._answers = threading.Thread(
            target=self._follow_answers, name="dashboard-answers", daemon=True
        )

    # --- the view --------------------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        with self._lock:
            return self._view()

    def _view(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "units": [self.units[n] for n in sorted(self.units)],
            "states": [s for n in sorted(self.states) for s in self.states[n]],
            "machines": list(self.machines),
            "unplaced": dict(self.unplaced),
            "use": dict(self.use),
            "rollouts": list(self.rollouts),
        }

    def apply(self, line: dict[str, Any]) -> tuple[str, Any] | None:
        """Update the view from one line of `/x/events`; the event to send to browsers."""
        kind = line.get("type")
        with self._lock:
            self.revision = int(line.get("revision") or self.revision)
            if kind == "snapshot":
                self.units = {u["name"]: u for u in line.get("units") or []}
                self.states = {}
                for state in line.get("states") or []:
                    self.states.setdefault(state["name"], []).append(state)
                self.machines = list(line.get("machines") or [])
                self.rollouts = _not_over(line.get("rollouts") or [])
                return "snapshot", self._view()
            if kind == "units":
                for entry in line.get("units") or []:
                    name = entry["name"]
                    if entry.get("unit") is None:
                        self.units.pop(name, None)
                    else:
                        self.units[name] = entry["unit"]
                    if entry.get("states"):
                        self.states[name] = list(entry["states"])
                    else:
                        self.states.pop(name, None)
                return "units", {"revision": self.revision, "units": line.get("units") or []}
            if kind == "machines":
                self.machines = list(line.get("machines") or [])
                return "machines", {"revision": self.revision, "machines": self.machines}
            if kind == "rollouts":
                self.rollouts = _not_over(line.get("rollouts") or [])
                return "rollouts", {"revision": self.revision, "rollouts": list(self.rollouts)}
        return None

    # --- listeners -------------------------------------------------------------------------
    def subscribe(self) -> tuple[queue.Queue[tuple[str, Any] | None], list[tuple[str, Any]]]:
        """A queue of future events, and the events that bring a new listener up to date."""
        q: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        with self._lock:
            self._listeners.add(q)
            first = [("status", dict(self.status))]
            if self.status["reachable"]:
                first.append(("snapshot", self._view()))
        return q, first

    def unsubscribe(self, q: queue.Queue[tuple[str, Any] | None]) -> None:
        with self._lock:
            self._listeners.discard(q)

    def _publish(self, event: tuple[str, Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for q in listeners:
            q.put(event)

    def _set_status(self, reachable: bool, error: str = "") -> None:
        with self._lock:
            if self.status == {"reachable": reachable, "error": error}:
                return
            self.status = {"reachable": reachable, "error": error}
        self._publish(("status", {"reachable": reachable, "error": error}))

    # --- following the API -----------------------------------------------------------------
    def start(self) -> Hub:
        self._thread.start()
        self._answers.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._answers_due.set()
        with self._lock:
            listeners = list(self._listeners)
        for q in listeners:
            q.put(None)

    def _run(self) -> None:
        delay = _BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                for line in self._client_factory().events():
                    if self._stop.is_set():
                        return
                    event = self.apply(line)
                    if line.get("type") == "snapshot":
                        self._set_status(True)
                        delay = _BACKOFF_FIRST
                    if event is not None:
                        self._publish(event)
                        self._ask_again()
            except APIError as err:
                self._set_status(False, str(err))
            except Exception as err:
                self._set_status(False, f"unexpected answer from the fleet API: {err}")
            # Reconnecting is the only retry here (the view itself is pushed, never polled).
            self._stop.wait(delay)
            delay = min(delay * 2, _BACKOFF_CAP)

    # --- why units have no machine, what machines have reserved -------------------------------
    def _wanting(self) -> tuple[bool, bool]:
        """Whether some unit wants a machine and has none; whether some machine says what it
        offers."""
        with self._lock:
            return (
                any(wants_machine(u) for u in self.units.values()),
                any(says_capacity(m) for m in self.machines),
            )

    def _ask_again(self) -> None:
        """After a change: have the answers thread ask again if a unit is unplaced now (or
        was), or a machine says its capacity (or did)."""
        with self._lock:
            had = bool(self.unplaced or self.use)
        if had or any(self._wanting()):
            self._answers_due.set()

    def reasons_for(self, answer: dict[str, str]) -> tuple[str, Any] | None:
        """Keep the API's reasons of the units unplaced in the view; the event for browsers,
        None when nothing changed."""
        with self._lock:
            wanting = {n for n, u in self.units.items() if wants_machine(u)}
            reasons = {n: r for n, r in sorted(answer.items()) if n in wanting}
            if reasons == self.unplaced:
                return None
            self.unplaced = reasons
            return "unplaced", {"revision": self.revision, "units": dict(reasons)}

    def use_for(self, answer: dict[str, Any]) -> tuple[str, Any] | None:
        """Keep the API's capacity and use of each machine (`x/machines`) in the view; the event
        for browsers, None when nothing changed."""
        with self._lock:
            use = dict(sorted((answer.get("machines") or {}).items()))
            if use == self.use:
                return None
            self.use = use
            return "use", {"revision": self.revision, "machines": dict(use)}

    def _follow_answers(self) -> None:
        asks = {"unplaced": True, "use": True}  # until the API says it has no such extension
        while True:
            self._answers_due.wait()  # set by a change (or stop): never on a timer
            if self._stop.is_set():
                return
            self._answers_due.clear()
            unplaced, capacity = self._wanting()
            if asks["unplaced"]:
                asks["unplaced"] = self._answer(
                    unplaced, lambda c: c.unplaced(), self.reasons_for, {}
                )
            if asks["use"]:
                asks["use"] = self._answer(capacity, lambda c: c.machines_use(), self.use_for, {})

    def _answer(
        self,
        wanted: bool,
        ask: Callable[[Client], _A],
        keep: Callable[[_A], tuple[str, Any] | None],
        nothing: _A,
    ) -> bool:
        """Ask the API (only when `wanted`; else the answer is `nothing`), keep the answer and
        publish its event; False when the API has no such extension (404: ask no more — rows
        show "not placed" only, machines no use)."""
        answer = nothing
        if wanted:
            try:
                answer = ask(self._client_factory())
            except APIError as err:
                # an error otherwise: the event stream reports the API; its next snapshot asks
                return not (err.code == 404 and not isinstance(err, Unreachable))
        event = keep(answer)
        if event is not None:
            self._publish(event)
        return True
