"""The optional fields fleetd's own requests share: `wait`/`active` flags and `timeout`."""

from __future__ import annotations

import pytest

from fleetd.reconcile.body import flag, timeout, wait_fields
from fleetd.reconcile.refuse import Refuse

NOT_A_FLAG = Refuse(400, "wait must be true or false")
NOT_A_TIMEOUT = Refuse(400, "timeout must be a non-negative number of seconds or null")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({}, False, id="absent-is-false"),
        pytest.param({"wait": True}, True, id="true"),
        pytest.param({"wait": False}, False, id="false"),
        # JSON's other truthy things are mistakes, not "yes"
        pytest.param({"wait": 1}, NOT_A_FLAG, id="one"),
        pytest.param({"wait": "true"}, NOT_A_FLAG, id="string"),
        pytest.param({"wait": None}, NOT_A_FLAG, id="null"),
    ],
)
def test_a_flag_is_true_or_false(body: dict[str, object], expected: object) -> None:
    assert flag(body, "wait") == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({}, None, id="absent-is-none"),
        pytest.param({"timeout": None}, None, id="null-is-none"),
        pytest.param({"timeout": 0}, 0, id="zero"),
        pytest.param({"timeout": 1.5}, 1.5, id="fraction"),
        pytest.param({"timeout": -0.1}, NOT_A_TIMEOUT, id="negative"),
        # a bool is an int to Python, never a number of seconds to fleetd
        pytest.param({"timeout": True}, NOT_A_TIMEOUT, id="bool"),
        pytest.param({"timeout": "10"}, NOT_A_TIMEOUT, id="string"),
    ],
)
def test_a_timeout_is_seconds_or_null(body: dict[str, object], expected: object) -> None:
    assert timeout(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({}, (False, None), id="neither"),
        pytest.param({"wait": True, "timeout": 3}, (True, 3), id="both"),
        # both wrong: the flag is named, as the request reads it first
        pytest.param({"wait": "no", "timeout": -1}, NOT_A_FLAG, id="flag-first"),
        pytest.param({"wait": False, "timeout": -1}, NOT_A_TIMEOUT, id="timeout"),
    ],
)
def test_a_request_that_may_wait_gives_its_flag_and_timeout(
    body: dict[str, object], expected: object
) -> None:
    assert wait_fields(body, "wait") == expected
