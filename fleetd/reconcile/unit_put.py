"""What `PUT /fleet/v1/units/{name}` does (fleet's `api/units.go`), decided without I/O.

One request creates a unit, replaces its options (fleetctl `--replace`), sets its desired state,
does nothing, or is refused with fleet's status and message, which fleetctl and scripts match on
word for word. The handler asks in two steps, so a bad request is refused before etcd is read
(and even while etcd is down): `read_put` checks the request alone, in fleet's order; `plan_put`
then decides against the unit's job as the registry has it. The handler applies the decision
with one guarded registry write and answers with the decision's `status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from fleetd.model import Job, JobState, ModelError
from fleetd.reconcile.refuse import Refuse
from fleetd.unit import (
    UnitFile,
    UnitNameError,
    UnitOption,
    UnitParseError,
    UnitValidationError,
    parse_name,
)

__all__ = [
    "Create",
    "PutDecision",
    "PutRequest",
    "Replace",
    "SetDesired",
    "Unchanged",
    "plan_created_meanwhile",
    "plan_put",
    "plan_update",
    "read_put",
    "unit_of",
]


@dataclass(frozen=True, slots=True)
class PutRequest:
    """A PUT that passed fleet's checks of the request: the unit's name, the options it brings
    (none: the request only sets a desired state) and the desired state it names (None: none)."""

    name: str
    options: tuple[UnitOption, ...]
    desired: JobState | None


@dataclass(frozen=True, slots=True)
class Create:
    """A new unit with the request's options, in the desired state named (inactive if none)."""

    unit: UnitFile
    desired: JobState
    status: ClassVar[int] = 201


@dataclass(frozen=True, slots=True)
class Replace:
    """New options for an existing unit: its content replaced in place, guarded on the job
    still being on `previous`; the desired state kept unless the request names one. 201, as
    fleet answers a replaced unit."""

    unit: UnitFile
    previous: str  # the hash of the content replaced
    desired: JobState | None
    status: ClassVar[int] = 201


@dataclass(frozen=True, slots=True)
class SetDesired:
    """An existing unit, its content as it is, in the desired state the request names."""

    desired: JobState
    status: ClassVar[int] = 204


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The unit's very options again, and no desired state: nothing to do."""

    status: ClassVar[int] = 204


PutDecision = Create | Replace | SetDesired | Unchanged | Refuse


# --- the request alone -----------------------------------------------------------------------
def read_put(name: str, body: object) -> PutRequest | Refuse:
    """The request of a PUT of unit `name` with the decoded JSON `body`, or fleet's refusal:
    the body must be an object, its name (if any) the URL's, the name valid, the options a list
    of string triples, the desired state one of fleet's; a template cannot be activated."""
    if not isinstance(body, dict):
        return Refuse(400, "unable to decode body: expected a JSON object")
    body_name = body.get("name")
    if body_name not in (None, "") and body_name != name:
        return Refuse(
            400, f'name in URL "{name}" differs from unit name in request body "{body_name}"'
        )
    try:
        template = parse_name(name).is_template
    except UnitNameError as err:
        return Refuse(400, str(err))
    options = _options(body.get("options"))
    if isinstance(options, Refuse):
        return options
    desired = _desired(body.get("desiredState"))
    if isinstance(desired, Refuse):
        return desired
    if template and desired not in (None, JobState.INACTIVE):
        return Refuse(400, f'cannot activate template "{name}"')
    return PutRequest(name, options, desired)


def _options(value: object) -> tuple[UnitOption, ...] | Refuse:
    if value is None:  # absent or null: the request brings no options
        return ()
    if not isinstance(value, list):
        return Refuse(400, "unable to decode body: options must be a list")
    out = []
    for item in value:
        if not isinstance(item, Mapping) or not all(
            isinstance(item.get(k), str) for k in ("section", "name", "value")
        ):
            return Refuse(
                400,
                "unable to decode body: each option must be an object with string "
                "section, name and value",
            )
        out.append(UnitOption(item["section"], item["name"], item["value"]))
    return tuple(out)


def _desired(value: object) -> JobState | Refuse | None:
    if value is None or value == "":  # absent, null or empty: no desired state named
        return None
    try:
        return JobState.parse(value)
    except ModelError:
        return Refuse(400, f"invalid desiredState {value!r}: expected inactive, loaded or launched")


# --- against the registry --------------------------------------------------------------------
def plan_put(request: PutRequest, existing: Job | None) -> PutDecision:
    """What the request does to the unit whose job is `existing` (None: no such unit). Options
    are read and their [X-Fleet] rules checked only when they would be stored: a unit's content
    is never one fleet could not schedule."""
    if existing is None:
        if not request.options:
            return Refuse(409, "unit does not exist and options field empty")
        unit = unit_of(request)
        if isinstance(unit, Refuse):
            return unit
        return Create(unit, request.desired or JobState.INACTIVE)
    if request.options:
        unit = unit_of(request)
        if isinstance(unit, Refuse):
            return unit
        if unit.hash != existing.unit_hash:
            return Replace(unit, existing.unit_hash, request.desired)
    return plan_update(request)


def plan_update(request: PutRequest) -> SetDesired | Unchanged | Refuse:
    """The request to an existing unit whose content it leaves as it is (it brings the same
    options, or none): set the desired state it names; with no desired state, the same options
    again are nothing to do, and no options at all are fleet's 409."""
    if request.desired is not None:
        return SetDesired(request.desired)
    if request.options:
        return Unchanged()
    return Refuse(409, "must provide DesiredState to update existing unit")


def plan_created_meanwhile(
    request: PutRequest, existing: Job | None
) -> SetDesired | Unchanged | Refuse:
    """The registry refused to create the unit because another writer created it meanwhile
    with the very same content; `existing` is its job read right after. The request goes on as
    an update of that unit — unless it was destroyed again before it could be read."""
    if existing is None:
        return Refuse(409, "unit was destroyed while it was being submitted")
    return plan_update(request)


def unit_of(request: PutRequest) -> UnitFile | Refuse:
    """The unit file of the request's options, its [X-Fleet] requirements checked."""
    try:
        unit = UnitFile.from_options(request.options)
        unit.requirements(request.name).validate()
    except (UnitParseError, UnitValidationError) as err:
        return Refuse(400, str(err))
    return unit
