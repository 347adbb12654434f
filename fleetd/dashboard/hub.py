"""The dashboard's view of the cluster, kept live from the fleet API's `GET /x/events` stream.

One `Hub` thread follows that stream (fed by fleetd's registry watch) and keeps the view; every
browser's server-sent events stream (server.py, `/events`) subscribes to it and gets each change
as it is applied. It is apart from the HTTP server because it is the dashboard's only state and
its only retry: when the API cannot be reached the hub says so (a `status` event, the page's
banner) and reconnects with a capped backoff; the snapshot it gets back replaces the view.
Nothing is polled. Threads and queues of the standard library only, like the server, so
`fleetctl dashboard` keeps fleetctl's light imports.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from fleetd.api.client import APIError, Client

__all__ = ["Hub"]

_BACKOFF_FIRST, _BACKOFF_CAP = 0.2, 3.0  # reconnecting to an unreachable API


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
        self.revision = 0
        self._thread = threading.Thread(target=self._run, name="dashboard-hub", daemon=True)

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
        return self

    def stop(self) -> None:
        self._stop.set()
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
            except APIError as err:
                self._set_status(False, str(err))
            except Exception as err:
                self._set_status(False, f"unexpected answer from the fleet API: {err}")
            # Reconnecting is the only retry here (the view itself is pushed, never polled).
            self._stop.wait(delay)
            delay = min(delay * 2, _BACKOFF_CAP)
