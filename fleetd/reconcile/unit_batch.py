"""What `POST /fleet/v1/x/units` (docs/api.md: many unit GETs, PUTs and DELETEs in one
request) asks, and which of its units are created together, decided without I/O.

Each request of a batch is answered as its own `PUT /units/{name}` or `DELETE` would be
(`fleetd.reconcile.unit_put` decides a PUT); the batch adds only its own checks of the
envelope, and two shortcuts: the PUTs that would create a unit, and those that only set a
unit's desired state, are offered to the registry together (a few transactions for hundreds
of units), before the rest go one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fleetd.model import JobState
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.unit_put import Create, PutRequest, plan_put, read_put

__all__ = ["BATCH_LIMIT", "BatchItem", "creates", "desired_states", "read_batch"]

BATCH_LIMIT = 1000  # requests in one batch: a bound on one request's etcd work and memory


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request of a batch: a GET of unit `name`, a PUT of it with `body` (a Unit), or its
    DELETE."""

    method: Literal["GET", "PUT", "DELETE"]
    name: str
    body: object = None


def read_batch(body: object) -> list[BatchItem] | Refuse:
    """The requests of a batch, in order, or the 400 of the first thing wrong with the
    envelope (a unit's own body is checked as its PUT would be, and answered in its place).
    A unit named twice is refused: the answers would depend on the order they ran in."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        return Refuse(400, 'unable to decode body: expected {"requests": [...]}')
    requests = body["requests"]
    if not 1 <= len(requests) <= BATCH_LIMIT:
        return Refuse(400, f"a batch holds 1 to {BATCH_LIMIT} requests, not {len(requests)}")
    items: list[BatchItem] = []
    for i, req in enumerate(requests):
        if not isinstance(req, dict) or req.get("method") not in ("GET", "PUT", "DELETE"):
            return Refuse(
                400, f'request {i}: expected {{"method": "GET", "PUT" or "DELETE", ...}}'
            )
        name = req.get("name")
        if not isinstance(name, str) or not name:
            return Refuse(400, f"request {i}: name must be a non-empty string")
        if req["method"] == "PUT" and not isinstance(req.get("body"), dict):
            return Refuse(400, f"request {i}: a PUT needs a body object (a Unit)")
        items.append(BatchItem(req["method"], name, req.get("body")))
    if len({item.name for item in items}) != len(items):
        return Refuse(400, "a batch names each unit once")
    return items


def creates(items: Iterable[BatchItem]) -> dict[str, Create]:
    """The PUTs that create their unit should it not exist yet, by name: offered to the
    registry together. The rest — refused, options-less, or a unit that turns out to exist —
    go the way of a single PUT, which answers them with its own decision or error."""
    out = {}
    for item in items:
        if item.method != "PUT":
            continue
        request = read_put(item.name, item.body)
        decision = plan_put(request, None) if isinstance(request, PutRequest) else request
        if isinstance(decision, Create):
            out[item.name] = decision
    return out


def desired_states(items: Iterable[BatchItem]) -> dict[str, JobState]:
    """The PUTs that only set an existing unit's desired state (a valid request with no
    options and a desired state: `fleetctl start` of submitted units), by name: offered to the
    registry together. One whose unit turns out not to exist, or that loses to another writer,
    goes the way of a single PUT, which answers it."""
    out = {}
    for item in items:
        if item.method != "PUT":
            continue
        request = read_put(item.name, item.body)
        if isinstance(request, PutRequest) and not request.options and request.desired:
            out[item.name] = request.desired
    return out
