"""`retry_unavailable`: etcd's unavailability is temporary (retried with backoff), any other
error is the caller's."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from fleetd.registry import EtcdRequestFailed, EtcdUnavailable
from fleetd.registry.watch import Backoff, retry_unavailable

FAST = Backoff(first=0.001, cap=0.001)


def failing(errors: list[Exception], value: str = "done"):  # type: ignore[no-untyped-def]
    calls = []

    async def make() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return value

    return make, calls


async def test_retried_until_etcd_answers_each_failure_logged() -> None:
    make, calls = failing([EtcdUnavailable(["e1"], "down"), EtcdUnavailable(["e1"], "still down")])
    with capture_logs() as logs:
        got = await retry_unavailable(make, "agent.register_retry", backoff=FAST, machine="m1")
    assert (got, len(calls)) == ("done", 3)
    assert [(e["event"], e["machine"], e["error"]) for e in logs] == [
        ("agent.register_retry", "m1", "etcd unavailable at e1: down"),
        ("agent.register_retry", "m1", "etcd unavailable at e1: still down"),
    ]


async def test_any_other_error_is_not_retried() -> None:
    make, calls = failing([EtcdRequestFailed("request too large")])
    with pytest.raises(EtcdRequestFailed):
        await retry_unavailable(make, "x.retry", backoff=FAST)
    assert len(calls) == 1


async def test_the_first_answer_is_taken_at_once() -> None:
    make, calls = failing([])
    with capture_logs() as logs:
        assert await retry_unavailable(make, "x.retry") == "done"
    assert (len(calls), logs) == (1, [])
