"""What `PUT /fleet/v1/units/{name}` does: fleet's checks of the request, then the decision
against the unit's job (create, replace, set the desired state, nothing, or fleet's error)."""

from __future__ import annotations

import pytest

from fleetd.model import Job, JobState
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.unit_put import (
    Create,
    PutRequest,
    Replace,
    SetDesired,
    Unchanged,
    plan_created_meanwhile,
    plan_put,
    plan_update,
    read_put,
)
from fleetd.unit import UnitFile, UnitOption

HELLO = [
    {"section": "Unit", "name": "Description", "value": "Hello World"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sh -c 'while true; do echo Hello; sleep 1; done'"},
]  # fmt: skip
OTHER = [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]
BAD_RULES = [*HELLO, {"section": "X-Fleet", "name": "MachineID", "value": "abc"},
             {"section": "X-Fleet", "name": "Global", "value": "true"}]  # fmt: skip
UNREADABLE = [{"section": "Service", "name": "Exec\nStart", "value": "x"}]
NO_SECTION = [{"section": "", "name": "ExecStart", "value": "x"}]


def unit_of(options: list[dict[str, str]]) -> UnitFile:
    return UnitFile.from_options(UnitOption(**o) for o in options)


def request(
    options: list[dict[str, str]] | None = None,
    desired: JobState | None = None,
    name: str = "hello.service",
) -> PutRequest:
    return PutRequest(name, tuple(UnitOption(**o) for o in options or ()), desired)


def job(options: list[dict[str, str]] = HELLO, desired: JobState = JobState.LOADED) -> Job:
    return Job("hello.service", unit_of(options).hash, desired)


# --- the request alone: fleet's checks, in fleet's order -------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        pytest.param([HELLO], id="array"),
        pytest.param("hello", id="string"),
        pytest.param(None, id="null"),
        pytest.param(7, id="number"),
    ],
)
def test_the_body_must_be_a_json_object(body: object) -> None:
    assert read_put("hello.service", body) == Refuse(
        400, "unable to decode body: expected a JSON object"
    )


@pytest.mark.parametrize(
    ("body_name", "message"),
    [
        # fleet's words, both names quoted
        pytest.param("other.service", 'name in URL "hello.service" differs from unit name in request body "other.service"', id="other-name"),
        # not even a string: still a mismatch, shown as Python prints it
        pytest.param(7, 'name in URL "hello.service" differs from unit name in request body "7"', id="number"),
    ],
)  # fmt: skip
def test_a_name_in_the_body_must_be_the_urls(body_name: object, message: str) -> None:
    assert read_put("hello.service", {"name": body_name, "options": HELLO}) == Refuse(400, message)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"options": HELLO}, id="absent"),
        pytest.param({"name": None, "options": HELLO}, id="null"),
        pytest.param({"name": "", "options": HELLO}, id="empty"),
        pytest.param({"name": "hello.service", "options": HELLO}, id="same"),
    ],
)
def test_the_body_may_leave_the_name_out(body: dict[str, object]) -> None:
    assert read_put("hello.service", body) == request(HELLO)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("hello", 'unit name must contain "."', id="no-type"),
        pytest.param("hello.foo", 'invalid unit type: "foo"', id="unknown-type"),
        pytest.param("a/b.service", "invalid character '/' in unit name", id="slash"),
        # fleetd's addition: no hidden file in the units directory
        pytest.param(".x.service", 'unit name cannot start in "."', id="hidden"),
        pytest.param("x" * 300 + ".service", "unit name exceeds maximum length (256)", id="too-long"),
    ],
)  # fmt: skip
def test_the_unit_name_is_checked_as_fleet_does(name: str, message: str) -> None:
    assert read_put(name, {"options": HELLO}) == Refuse(400, message)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param("[Service]\nExecStart=/bin/true", id="unit-file-text"),
        pytest.param({"section": "Service"}, id="one-object"),
        pytest.param(0, id="number"),
    ],
)
def test_options_must_be_a_list(options: object) -> None:
    assert read_put("hello.service", {"options": options}) == Refuse(
        400, "unable to decode body: options must be a list"
    )


@pytest.mark.parametrize(
    "option",
    [
        pytest.param({"section": "Service", "name": "ExecStart"}, id="no-value"),
        pytest.param({"section": 1, "name": "ExecStart", "value": "x"}, id="number-section"),
        pytest.param({"section": "Service", "name": "ExecStart", "value": None}, id="null-value"),
        pytest.param(["Service", "ExecStart", "x"], id="array"),
    ],
)
def test_each_option_is_an_object_of_three_strings(option: object) -> None:
    assert read_put("hello.service", {"options": [*HELLO, option]}) == Refuse(
        400,
        "unable to decode body: each option must be an object with string section, name and value",
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"desiredState": "launched"}, id="absent"),
        pytest.param({"options": None, "desiredState": "launched"}, id="null"),
        pytest.param({"options": [], "desiredState": "launched"}, id="empty"),
    ],
)
def test_a_request_without_options_only_names_a_desired_state(body: dict[str, object]) -> None:
    assert read_put("hello.service", body) == request(desired=JobState.LAUNCHED)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("inactive", JobState.INACTIVE, id="inactive"),
        pytest.param("loaded", JobState.LOADED, id="loaded"),
        pytest.param("launched", JobState.LAUNCHED, id="launched"),
        # absent, null or empty: no desired state named
        pytest.param(None, None, id="null"),
        pytest.param("", None, id="empty"),
        # fleet's words otherwise, the value shown as sent
        pytest.param("running", Refuse(400, "invalid desiredState 'running': expected inactive, loaded or launched"), id="unknown"),
        pytest.param("LAUNCHED", Refuse(400, "invalid desiredState 'LAUNCHED': expected inactive, loaded or launched"), id="upper-case"),
        pytest.param(5, Refuse(400, "invalid desiredState 5: expected inactive, loaded or launched"), id="number"),
    ],
)  # fmt: skip
def test_the_desired_state_is_one_of_fleets(value: object, expected: object) -> None:
    got = read_put("hello.service", {"options": HELLO, "desiredState": value})
    assert got == (expected if isinstance(expected, Refuse) else request(HELLO, expected))


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        # a template is only ever stored: instances are what runs
        pytest.param("launched", Refuse(400, 'cannot activate template "x@.service"'), id="launched"),
        pytest.param("loaded", Refuse(400, 'cannot activate template "x@.service"'), id="loaded"),
        pytest.param("inactive", request(HELLO, JobState.INACTIVE, "x@.service"), id="inactive"),
        pytest.param(None, request(HELLO, None, "x@.service"), id="none"),
    ],
)  # fmt: skip
def test_a_template_cannot_be_activated(desired: str | None, expected: object) -> None:
    assert read_put("x@.service", {"options": HELLO, "desiredState": desired}) == expected


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        # the body's name is compared before the URL's name is checked
        pytest.param("hello", {"name": "x.service", "options": 1}, 'name in URL "hello" differs from unit name in request body "x.service"', id="mismatch-first"),
        # the name before the options
        pytest.param("hello", {"options": 1, "desiredState": "up"}, 'unit name must contain "."', id="name-before-options"),
        # the options before the desired state
        pytest.param("hello.service", {"options": 1, "desiredState": "up"}, "unable to decode body: options must be a list", id="options-before-desired"),
        # an unknown desired state before the template rule
        pytest.param("x@.service", {"desiredState": "up"}, "invalid desiredState 'up': expected inactive, loaded or launched", id="desired-before-template"),
    ],
)  # fmt: skip
def test_the_first_fault_in_fleets_order_is_the_answer(
    name: str, body: object, message: str
) -> None:
    assert read_put(name, body) == Refuse(400, message)


# --- against the unit's job ------------------------------------------------------------------
@pytest.mark.parametrize(
    "desired",
    [
        pytest.param(None, id="no-desired-state"),
        pytest.param(JobState.LAUNCHED, id="launched"),
    ],
)
def test_a_unit_that_does_not_exist_needs_options(desired: JobState | None) -> None:
    assert plan_put(request(desired=desired), None) == Refuse(
        409, "unit does not exist and options field empty"
    )


@pytest.mark.parametrize(
    ("desired", "stored"),
    [
        # fleetctl submit: stored inactive
        pytest.param(None, JobState.INACTIVE, id="submit"),
        pytest.param(JobState.LOADED, JobState.LOADED, id="load"),
        pytest.param(JobState.LAUNCHED, JobState.LAUNCHED, id="start"),
    ],
)
def test_a_new_unit_is_created_in_the_desired_state_named(
    desired: JobState | None, stored: JobState
) -> None:
    assert plan_put(request(HELLO, desired), None) == Create(unit_of(HELLO), stored)


@pytest.mark.parametrize(
    ("options", "existing", "message"),
    [
        # [X-Fleet] rules fleet could never satisfy: refused before anything is stored
        pytest.param(BAD_RULES, None, "MachineID cannot be used with Global", id="new-bad-rules"),
        pytest.param(BAD_RULES, job(), "MachineID cannot be used with Global", id="replacing-bad-rules"),
        # options no unit file could hold
        pytest.param(UNREADABLE, None, "invalid options: expected Name=Value, found 'Exec'", id="new-unreadable"),
        pytest.param(NO_SECTION, job(), "invalid options: section name cannot be empty", id="replacing-no-section"),
    ],
)  # fmt: skip
def test_options_are_checked_before_they_are_stored(
    options: list[dict[str, str]], existing: Job | None, message: str
) -> None:
    assert plan_put(request(options, JobState.LAUNCHED), existing) == Refuse(400, message)


@pytest.mark.parametrize(
    ("desired", "expected_desired"),
    [
        # fleetctl --replace: the desired state is kept ...
        pytest.param(None, None, id="keep-desired"),
        # ... unless the request names one
        pytest.param(JobState.LAUNCHED, JobState.LAUNCHED, id="and-launch"),
    ],
)
def test_other_options_replace_the_unit_in_place(
    desired: JobState | None, expected_desired: JobState | None
) -> None:
    existing = job(HELLO)
    assert plan_put(request(OTHER, desired), existing) == Replace(
        unit_of(OTHER), existing.unit_hash, expected_desired
    )


def test_the_same_options_again_without_a_desired_state_change_nothing() -> None:
    assert plan_put(request(HELLO), job(HELLO)) == Unchanged()


@pytest.mark.parametrize(
    "options",
    [
        # fleetctl start/stop/load of a unit: no options, a desired state
        pytest.param(None, id="desired-state-only"),
        # the same options again with a desired state: only the desired state changes
        pytest.param(HELLO, id="same-options"),
    ],
)
def test_an_existing_unit_is_set_to_the_desired_state_named(
    options: list[dict[str, str]] | None,
) -> None:
    assert plan_put(request(options, JobState.LAUNCHED), job(HELLO)) == SetDesired(
        JobState.LAUNCHED
    )


def test_the_same_desired_state_again_is_still_set() -> None:
    # no short cut: the guarded write tells a destroyed unit (404) from one left as it is
    assert plan_put(request(desired=JobState.LOADED), job(desired=JobState.LOADED)) == (
        SetDesired(JobState.LOADED)
    )


def test_an_existing_unit_needs_a_desired_state_or_options() -> None:
    assert plan_put(request(), job()) == Refuse(
        409, "must provide DesiredState to update existing unit"
    )


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        pytest.param(request(HELLO, JobState.LAUNCHED), SetDesired(JobState.LAUNCHED), id="set"),
        pytest.param(request(HELLO), Unchanged(), id="unchanged"),
        pytest.param(request(), Refuse(409, "must provide DesiredState to update existing unit"), id="nothing-asked"),
    ],
)  # fmt: skip
def test_an_update_leaves_the_content_as_it_is(req: PutRequest, expected: object) -> None:
    assert plan_update(req) == expected


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        # another writer created it with this very content: the request goes on as an update
        pytest.param(job(HELLO), SetDesired(JobState.LAUNCHED), id="there"),
        # ... and the unit was destroyed again before it could be read
        pytest.param(None, Refuse(409, "unit was destroyed while it was being submitted"), id="gone-again"),
    ],
)  # fmt: skip
def test_a_unit_created_meanwhile_is_updated(existing: Job | None, expected: object) -> None:
    assert plan_created_meanwhile(request(HELLO, JobState.LAUNCHED), existing) == expected


@pytest.mark.parametrize(
    ("decision", "status"),
    [
        pytest.param(Create(unit_of(HELLO), JobState.INACTIVE), 201, id="created"),
        # fleet answers a replaced unit as a created one
        pytest.param(Replace(unit_of(OTHER), unit_of(HELLO).hash, None), 201, id="replaced"),
        pytest.param(SetDesired(JobState.LAUNCHED), 204, id="desired-state"),
        pytest.param(Unchanged(), 204, id="unchanged"),
    ],
)
def test_each_action_answers_with_fleets_status(decision: object, status: int) -> None:
    assert decision.status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "existing"),
    [
        pytest.param({"options": HELLO}, None, id="submit"),
        pytest.param({"options": HELLO, "desiredState": "launched"}, None, id="start-new"),
        pytest.param({"options": OTHER}, job(HELLO), id="replace"),
        pytest.param({"options": OTHER, "desiredState": "inactive"}, job(HELLO), id="replace-and-stop"),
        pytest.param({"desiredState": "launched"}, job(HELLO), id="start"),
    ],
)  # fmt: skip
def test_the_same_put_again_stores_nothing_new(
    body: dict[str, object], existing: Job | None
) -> None:
    # a PUT repeated (a retry after a lost answer) never creates or replaces a second time
    req = read_put("hello.service", body)
    assert isinstance(req, PutRequest)
    after = applied(existing, plan_put(req, existing))
    assert isinstance(plan_put(req, after), SetDesired | Unchanged)


def applied(existing: Job | None, decision: object) -> Job:
    """The job the registry holds once `decision` is applied to `existing`."""
    match decision:
        case Create(unit=unit, desired=desired):
            return Job("hello.service", unit.hash, desired)
        case Replace(unit=unit, desired=desired) if existing is not None:
            return Job(existing.name, unit.hash, desired or existing.desired)
        case SetDesired(desired=desired) if existing is not None:
            return Job(existing.name, existing.unit_hash, desired)
    raise AssertionError(f"not a change: {decision}")
