"""`POST x/units`: the envelope of a batch of unit requests, and which of its PUTs are offered
to the registry together as new units."""

from __future__ import annotations

import pytest

from fleetd.model import JobState
from fleetd.reconcile.refuse import Refuse
from fleetd.reconcile.unit_batch import (
    BATCH_LIMIT,
    BatchItem,
    creates,
    desired_states,
    read_batch,
)

HELLO = {"options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]}


def put(name: str = "a.service", body: object = HELLO) -> dict[str, object]:
    return {"method": "PUT", "name": name, "body": body}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param([put()], 'unable to decode body: expected {"requests": [...]}', id="array"),
        pytest.param({"requests": put()}, 'unable to decode body: expected {"requests": [...]}', id="not-a-list"),
        pytest.param({"requests": []}, f"a batch holds 1 to {BATCH_LIMIT} requests, not 0", id="empty"),
        pytest.param({"requests": [put(f"u{i}.service") for i in range(BATCH_LIMIT + 1)]}, f"a batch holds 1 to {BATCH_LIMIT} requests, not {BATCH_LIMIT + 1}", id="too-many"),
        # the index names the culprit among hundreds
        pytest.param({"requests": [put(), {"method": "POST", "name": "b.service"}]}, 'request 1: expected {"method": "GET", "PUT" or "DELETE", ...}', id="post"),
        pytest.param({"requests": ["a.service"]}, 'request 0: expected {"method": "GET", "PUT" or "DELETE", ...}', id="string"),
        pytest.param({"requests": [{"method": "DELETE", "name": ""}]}, "request 0: name must be a non-empty string", id="empty-name"),
        pytest.param({"requests": [{"method": "DELETE"}]}, "request 0: name must be a non-empty string", id="no-name"),
        pytest.param({"requests": [put(body=None)]}, "request 0: a PUT needs a body object (a Unit)", id="put-no-body"),
        # two requests on one unit would be answered in whatever order they ran
        pytest.param({"requests": [put(), {"method": "DELETE", "name": "a.service"}]}, "a batch names each unit once", id="twice"),
    ],
)  # fmt: skip
def test_a_bad_envelope_refuses_the_whole_batch(body: object, message: str) -> None:
    assert read_batch(body) == Refuse(400, message)


def test_the_requests_of_a_batch_in_order() -> None:
    body = {"requests": [put("b.service"), {"method": "DELETE", "name": "a.service"},
                         put("c.service", {"desiredState": "launched"})]}  # fmt: skip
    assert read_batch(body) == [
        BatchItem("PUT", "b.service", HELLO),
        BatchItem("DELETE", "a.service"),
        BatchItem("PUT", "c.service", {"desiredState": "launched"}),
    ]


def test_only_puts_that_would_create_are_offered_together() -> None:
    items = [
        BatchItem("PUT", "new.service", {**HELLO, "desiredState": "launched"}),
        BatchItem("PUT", "plain.service", HELLO),
        # a DELETE, a desired state alone (needs an existing unit), a refused PUT, a template
        # being launched: each answered by its own request's way, with its own error
        BatchItem("DELETE", "old.service"),
        BatchItem("PUT", "start.service", {"desiredState": "launched"}),
        BatchItem("PUT", "bad.service", {"options": "x"}),
        BatchItem("PUT", "tpl@.service", {**HELLO, "desiredState": "launched"}),
    ]
    planned = creates(items)
    assert list(planned) == ["new.service", "plain.service"]
    assert planned["new.service"].desired is JobState.LAUNCHED
    assert planned["plain.service"].desired is JobState.INACTIVE  # fleet's default


def test_only_puts_that_set_a_desired_state_alone_are_offered_together() -> None:
    items = [
        BatchItem("PUT", "start.service", {"desiredState": "launched"}),
        BatchItem("PUT", "stop.service", {"name": "stop.service", "desiredState": "loaded"}),
        # options (a create or a replace), no desired state (fleet's 409), a bad state or name
        # (400), a DELETE, a GET: each answered by its own request's way
        BatchItem("PUT", "new.service", {**HELLO, "desiredState": "launched"}),
        BatchItem("PUT", "nothing.service", {}),
        BatchItem("PUT", "bad.service", {"desiredState": "running"}),
        BatchItem("PUT", "x/y.service", {"desiredState": "launched"}),
        BatchItem("DELETE", "old.service"),
        BatchItem("GET", "seen.service"),
    ]
    assert desired_states(items) == {
        "start.service": JobState.LAUNCHED,
        "stop.service": JobState.LOADED,
    }
