"""The fleet API v1 client fleetctl uses: standard library only, so fleetctl starts fast.

`Transport` (`fleetd.api.transport`) reaches the endpoint — a unix socket
(`unix:///var/run/fleet.sock`), or TCP (`http://host:port`, `https://host:port` with a CA and
a client certificate) — and turns error answers into `APIError`s; this module says what the
requests are: fleet's API, fleetd's extensions (waits, restarts, events, status, journal), and
requests over many units at once, batched and a few in flight, so a command over a thousand
units calls one method and does not care how they travel.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

from fleetd.api.transport import (  # the errors, re-exported: callers import one module
    PREFIX,
    APIError,
    BadEndpoint,
    BadTLSFile,
    CannotConnect,
    MachineUnreachable,
    Transport,
    Unreachable,
)

__all__ = [
    "PREFIX",
    "APIError",
    "BadEndpoint",
    "BadTLSFile",
    "CannotConnect",
    "Client",
    "MachineUnreachable",
    "Unreachable",
]

_STATUS_TIMEOUT = 60.0  # status may be forwarded to another machine
# A request naming more units than this lists the registry once instead of asking per unit.
_LIST_ABOVE = 8
_WORKERS = 16  # requests in flight at once for requests over many units
_BATCH = 100  # unit requests per x/units batch (several batches in flight: each within the timeout)
_BATCH_BYTES = 512 * 1024  # and JSON bytes per batch: half the server's 1 MiB body limit


class Client(Transport):
    """fleet's API v1, synchronously, as fleetctl needs it."""

    # --- fleet API v1 ----------------------------------------------------------------------
    def units(self) -> list[dict]:
        return self._all_pages("/units", "units", {})

    def unit(self, name: str) -> dict | None:
        try:
            return self._call("GET", f"/units/{_q(name)}")[1]
        except APIError as err:
            if err.code == 404 and not isinstance(err, Unreachable):
                return None
            raise

    def put_unit(
        self,
        name: str,
        *,
        options: list[dict] | None = None,
        desired_state: str | None = None,
    ) -> int:
        body: dict[str, Any] = {"name": name}
        if options is not None:
            body["options"] = options
        if desired_state is not None:
            body["desiredState"] = desired_state
        return self._call("PUT", f"/units/{_q(name)}", body=body)[0]

    def destroy_unit(self, name: str) -> bool:
        try:
            self._call("DELETE", f"/units/{_q(name)}")
        except APIError as err:
            if err.code == 404 and not isinstance(err, Unreachable):
                return False
            raise
        return True

    def batch(self, requests: list[dict[str, Any]]) -> list[APIError | None]:
        """Many unit requests in one (fleetd's `POST x/units`, at most 1,000): each a PUT
        (`{"method": "PUT", "name": ..., "body": {...}}`) or a DELETE (`{"method": "DELETE",
        "name": ...}`). Returns, in order, None for each that succeeded, else its APIError.
        A server without the extension answers 404 (APIError) for the whole batch."""
        return [_error_of(answer) for answer in self._batch(requests)]

    def _batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The answers of one `POST x/units`, in order (`{"name", "status", "error"?,
        "unit"?}`)."""
        _, body = self._call("POST", "/x/units", body={"requests": requests})
        answers = list((body or {}).get("responses") or [])
        if len(answers) != len(requests):
            raise APIError(0, f"the batch of {len(requests)} got {len(answers)} answers")
        return answers

    def states(self, *, unit_name: str | None = None, machine_id: str | None = None) -> list[dict]:
        query = {}
        if unit_name:
            query["unitName"] = unit_name
        if machine_id:
            query["machineID"] = machine_id
        return self._all_pages("/state", "states", query)

    def machines(self) -> list[dict]:
        return self._all_pages("/machines", "machines", {})

    def patch_machines(self, operations: Sequence[dict[str, Any]]) -> None:
        """Change machines' dynamic metadata (fleet's `PATCH /machines`): each operation
        `{"op": "add"|"replace"|"remove", "path": "/<id>/metadata/<key>", "value"?: {"value":
        v}}`, all applied or none (the API refuses the whole list at its first bad one)."""
        self._call("PATCH", "/machines", body=list(operations))

    # --- fleetd extensions -----------------------------------------------------------------
    def wait(
        self,
        units: list[str],
        state: str,
        *,
        active: bool = False,
        timeout: float | None = None,
        settle: float = 0.0,
    ) -> Iterator[dict]:
        """Each unit's line as it reaches `state` (or, with `"failed": true`, can no longer
        reach it), then `{"done": true, "pending": [...]}`."""
        body: dict[str, Any] = {
            "units": list(units),
            "state": state,
            "active": active,
            "timeout": timeout,
        }
        if settle:
            body["settle"] = settle
        yield from self._json_lines("POST", "/x/wait", body=body, endless=False)

    def restart(
        self, name: str, machine_id: str, *, wait: bool = False, timeout: float | None = None
    ) -> dict:
        """Restart `name` on one machine (`POST x/units/{name}/restart`). Without `wait`, the
        answer `{"token"}` once the request is stored; with it, the last line of the stream:
        `{"done", "restarted", "reason"?, "machineID", "machineIP", "systemd*State"...}`."""
        body = {"machineID": machine_id, "wait": wait, "timeout": timeout}
        path = f"/x/units/{_q(name)}/restart"
        if not wait:
            return self._call("POST", path, body=body)[1] or {}
        for line in self._json_lines("POST", path, body=body, endless=False):
            if line.get("done"):
                return line
        raise Unreachable(0, f"lost the fleet API at {self.endpoint}: the restart stream ended")

    def why(self, name: str) -> dict:
        """Why `name` runs where it does, or nowhere (`GET x/why/{name}`): the explanation,
        with the `lines` fleetctl prints. 404 (APIError) for a unit that does not exist."""
        return self._call("GET", f"/x/why/{_q(name)}")[1] or {}

    def unplaced(self) -> dict[str, str]:
        """Every unit that wants a machine and has none, with the reason (`GET x/unplaced`)."""
        body = self._call("GET", "/x/unplaced")[1] or {}
        return dict(body.get("units") or {})

    def machines_use(self) -> dict:
        """Each machine's capacity and what its units reserve of it (`GET x/machines`):
        `{"machines": {id: {"memory": {...}, "cpus": {...}, "overcommit", "overcommitted"}},
        "reservingUnits": n}`. A server without the extension answers 404 (APIError)."""
        return self._call("GET", "/x/machines")[1] or {}

    # --- rollouts (docs/rolling-updates.md) -----------------------------------------------
    def begin_rollout(
        self, name: str, action: str, options: Sequence[dict[str, str]] | None = None
    ) -> dict:
        """Begin a rollout (`POST x/rollouts`): `{"rollout": {...}}`, or `{"rollout": null,
        "replaced": true}` when no instance ran (the units were replaced at once)."""
        body: dict[str, Any] = {"name": name, "action": action}
        if options is not None:
            body["options"] = list(options)
        return self._call("POST", "/x/rollouts", body=body)[1] or {}

    def rollouts(self) -> list[dict]:
        return list((self._call("GET", "/x/rollouts")[1] or {}).get("rollouts") or [])

    def rollout(self, name: str) -> dict:
        """The rollout of `name` (404, APIError, when there is none)."""
        return self._call("GET", f"/x/rollouts/{_q(name)}")[1] or {}

    def follow_rollout(self, name: str) -> Iterator[dict]:
        """The rollout of `name`, then again each time it changes, until it is finished."""
        path, query = f"/x/rollouts/{_q(name)}", {"follow": "true"}
        for line in self._stream("GET", path, endless=False, query=query):
            if line.strip():
                yield json.loads(line)

    def rollout_command(self, name: str, verb: str) -> dict:
        """`pause`, `resume`, `promote` or `undo` the rollout of `name`: the new document."""
        return self._call("POST", f"/x/rollouts/{_q(name)}/{_q(verb)}", body={})[1] or {}

    # --- cordons and drains (docs/api.md) --------------------------------------------------
    def cordons(self) -> list[dict]:
        """Every cordoned machine's cordon (`GET x/cordons`)."""
        return list((self._call("GET", "/x/cordons")[1] or {}).get("cordons") or [])

    def cordon(self, machine_id: str) -> dict:
        """Cordon a machine: `{"cordon": {...}, "changed": bool}` (False: it was already)."""
        return self._call("PUT", f"/x/machines/{_q(machine_id)}/cordon")[1] or {}

    def uncordon(self, machine_id: str) -> dict:
        """Uncordon a machine (ends its drain): `{"uncordoned": bool, "was": {...}|null}`."""
        return self._call("DELETE", f"/x/machines/{_q(machine_id)}/cordon")[1] or {}

    def drain(self, machine_id: str, *, stop_globals: bool = False) -> dict:
        """Drain a machine: `{"cordon": {...}, "changed": bool}` (False: it was draining)."""
        path = f"/x/machines/{_q(machine_id)}/drain"
        return self._call("POST", path, body={"stopGlobals": stop_globals})[1] or {}

    def cordon_of(self, machine_id: str) -> dict:
        """The machine's cordon (404, APIError, when it is not cordoned)."""
        return self._call("GET", f"/x/machines/{_q(machine_id)}/cordon")[1] or {}

    def follow_drain(self, machine_id: str) -> Iterator[dict]:
        """The machine's cordon, then again each time it changes, until its drain is over
        (drained, stopped by a failure, or uncordoned: the stream ends)."""
        path, query = f"/x/machines/{_q(machine_id)}/cordon", {"follow": "true"}
        for line in self._stream("GET", path, endless=False, query=query):
            if line.strip():
                yield json.loads(line)

    def events(self) -> Iterator[dict]:
        """The registry's changes (`GET /x/events`): a `snapshot` line, then `units` and
        `machines` lines as they happen, until the server goes away (then `Unreachable`)."""
        yield from self._json_lines("GET", "/x/events", endless=True)

    def _json_lines(
        self, method: str, path: str, *, endless: bool, body: Any = None
    ) -> Iterator[dict]:
        """The JSON documents of a streamed answer, one a line (see `_stream`)."""
        for line in self._stream(method, path, body=body, endless=endless):
            if line.strip():
                yield json.loads(line)

    def status(self, name: str) -> str:
        _, text = self._call(
            "GET", f"/x/units/{_q(name)}/status", timeout=max(self.timeout, _STATUS_TIMEOUT)
        )
        if text is None:  # an empty body
            return ""
        return text if isinstance(text, str) else json.dumps(text)

    def journal(
        self, name: str, *, lines: int = 10, follow: bool = False, machine_id: str | None = None
    ) -> Iterator[bytes]:
        """The unit's journal, chunk by chunk as the server sends it (forever with follow).

        `machine_id` names the machine whose journal to read; a global unit needs one.
        """
        query = {"lines": str(lines), "follow": "true" if follow else "false"}
        if machine_id:
            query["machineID"] = machine_id
        yield from self._stream(
            "GET", f"/x/units/{_q(name)}/journal", query=query, endless=False, lines=False,
            timeout=max(self.timeout, _STATUS_TIMEOUT),
        )  # fmt: skip

    # --- many units at once ----------------------------------------------------------------
    def units_named(self, names: Sequence[str]) -> dict[str, dict]:
        """The registered units among `names`, by name: their GETs in `x/units` batches (the
        server reads those units' keys only, however large the cluster); from a server
        without them (fleet), one listing for many names, else one GET each."""
        names = list(dict.fromkeys(names))
        if len(names) > 1:
            requests = [{"method": "GET", "name": name} for name in names]
            try:
                answers = _parallel([lambda c=c: self._batch(c) for c in _chunks(requests)])
            except APIError as err:  # 404: no x/units; 400: no GET in it (an older fleetd)
                if err.code not in (400, 404) or isinstance(err, Unreachable):
                    raise
            else:
                found: dict[str, dict] = {}
                for answer in (a for chunk in answers for a in chunk):
                    error = _error_of(answer)
                    if error is None:
                        found[answer["name"]] = answer["unit"]
                    elif error.code != 404:
                        raise error
                return found
        if len(names) > _LIST_ABOVE:
            wanted = set(names)
            return {u["name"]: u for u in self.units() if u["name"] in wanted}
        found = _parallel([lambda n=n: self.unit(n) for n in names])
        return {name: unit for name, unit in zip(names, found, strict=True) if unit is not None}

    def put_units(self, units: Sequence[dict[str, Any]]) -> list[APIError | None]:
        """PUT each unit (the body of its `PUT /units/{name}`: name, options?, desiredState?).
        Returns, in order, None for each that succeeded, else its APIError."""
        return self._each([{"method": "PUT", "name": u["name"], "body": u} for u in units])

    def destroy_units(self, names: Sequence[str]) -> list[APIError | None]:
        """DELETE each unit; one already gone counts as destroyed. Returns, in order, None for
        each destroyed, else its APIError."""
        return self._each([{"method": "DELETE", "name": name} for name in names])

    def _each(self, requests: list[dict[str, Any]]) -> list[APIError | None]:
        """Unit requests of `batch`'s form: several go as batches (fleetd's `x/units`, a few in
        flight), or one request each, a few at a time, to a server without the extension."""
        if len(requests) > 1:
            chunks = _chunks(requests)

            def batch(chunk: list[dict[str, Any]]) -> list[APIError | None]:
                try:
                    return self.batch(chunk)
                except APIError as err:
                    if err.code == 404 and not isinstance(err, Unreachable):
                        raise  # no x/units here
                    return [err] * len(chunk)  # each failed as its batch did

            try:
                answers = _parallel([lambda c=c: batch(c) for c in chunks])
            except APIError:
                pass  # no x/units on this server: one request per unit
            else:
                return [
                    None if e is not None and e.code == 404 and r["method"] == "DELETE" else e
                    for r, e in zip(requests, (e for a in answers for e in a), strict=True)
                ]
        return _parallel([lambda r=r: self._one(r) for r in requests])

    def _one(self, request: dict[str, Any]) -> APIError | None:
        """A request of a batch sent alone (PUT or DELETE): None, or its APIError."""
        try:
            if request["method"] == "DELETE":
                self.destroy_unit(request["name"])
            else:
                body = request["body"]
                self.put_unit(
                    request["name"],
                    options=body.get("options"),
                    desired_state=body.get("desiredState"),
                )
        except APIError as err:
            return err
        return None


def _error_of(answer: dict[str, Any]) -> APIError | None:
    """A batch answer's error, None for one that succeeded."""
    error = answer.get("error")
    return None if error is None else APIError(error["code"], error.get("message", ""))


def _chunks(requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The batches of `requests`, in order: at most `_BATCH` requests and `_BATCH_BYTES` bytes
    of JSON each (fleetd refuses a body over 1 MiB with 413: large unit files must not turn a
    batch into one); a request larger than that alone goes by itself, and the server answers
    it as it would alone."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for request in requests:
        length = len(json.dumps(request, separators=(",", ":"))) + 1
        if current and (len(current) == _BATCH or size + length > _BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(request)
        size += length
    if current:
        chunks.append(current)
    return chunks


def _parallel(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the calls (requests) a few at a time; results in order; the first error (in the
    calls' order) is raised once all have finished."""
    if len(calls) <= 1:
        return [call() for call in calls]
    from concurrent.futures import ThreadPoolExecutor  # only for commands over several units

    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


def _q(name: str) -> str:
    """A unit name as a path segment (fleet's URLs keep `@` and `:` as they are)."""
    return quote(name, safe="@:")
