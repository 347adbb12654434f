"""The optional fields fleetd's own requests share (`x/wait`, `x/units/{name}/restart`), read
without I/O so that the planners reading those requests refuse a bad one in one place, in the
same words for every endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetd.reconcile.refuse import Refuse

__all__ = ["flag", "timeout", "wait_fields"]


def flag(body: Mapping[str, Any], key: str) -> bool | Refuse:
    """The optional true/false field `key` (default false); a 400 naming it otherwise, since a
    truthy string or number would silently mean something the caller may not have meant."""
    value = body.get(key, False)
    if not isinstance(value, bool):
        return Refuse(400, f"{key} must be true or false")
    return value


def timeout(body: Mapping[str, Any]) -> float | Refuse | None:
    """The optional `timeout` in seconds (absent or null: none). A boolean is refused even
    though Python counts it a number: `"timeout": true` is a mistake, not one second."""
    value = body.get("timeout")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or value < 0
    ):
        return Refuse(400, "timeout must be a non-negative number of seconds or null")
    return value


def wait_fields(body: Mapping[str, Any], key: str) -> tuple[bool, float | None] | Refuse:
    """The flag `key` and the `timeout` of a request that may wait, the flag checked first."""
    value = flag(body, key)
    if isinstance(value, Refuse):
        return value
    seconds = timeout(body)
    if isinstance(seconds, Refuse):
        return seconds
    return value, seconds
