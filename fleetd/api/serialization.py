"""Errors and bodies in fleet's shape (`api/serialization.go`), shared by every resource."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import structlog
from aiohttp import web

from fleetd.errors import TemporaryError
from fleetd.reconcile.refuse import Refuse
from fleetd.registry import EtcdUnavailable, RegistryConflict, RegistryError

__all__ = [
    "ETCD_DOWN",
    "Fail",
    "error_response",
    "failure_of",
    "granted",
    "json_response",
    "read_json",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
JSON = "application/json"
ETCD_DOWN = "fleet server unable to communicate with etcd"


class Fail(Exception):
    """A request that ends with a fleet error body: `{"error":{"code":..,"message":..}}`."""

    def __init__(self, code: int, message: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra  # more fields of the error object (e.g. `reason`, docs/api.md)


def granted(decision: T | Refuse) -> T:
    """A pure planner's decision (`fleetd.reconcile`), or its refusal raised as fleet's error."""
    if isinstance(decision, Refuse):
        raise Fail(decision.code, decision.message)
    return decision


def failure_of(err: Exception, *, what: str) -> tuple[int, str] | None:
    """The status and message a request that raised `err` is answered with (logged where the
    operator should know); None for an exception that is a bug (the caller logs a 500)."""
    match err:
        case Fail(code=code, message=message):
            return code, message
        case EtcdUnavailable():
            log.warning("api.etcd_unavailable", path=what, error=str(err))
            return 503, ETCD_DOWN
        case RegistryConflict():
            return 503, str(err)
        case RegistryError():
            log.error("api.registry_error", path=what, error=str(err))
            return 500, ""
        case TemporaryError():  # e.g. systemd could not answer: worth asking again
            log.warning("api.temporary_error", path=what, error=str(err))
            return 503, str(err)
    return None


def error_response(code: int, message: str = "", **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.Response(status=code, text=json.dumps(body), content_type=JSON)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data, separators=(",", ":")), content_type=JSON
    )


def check_content_type(request: web.Request) -> None:
    """Exactly one Content-Type, whose media type is application/json (else 415, as fleet)."""
    values = request.headers.getall("Content-Type", [])
    if len(values) != 1:
        raise Fail(415, f"expected 1 Content-Type, got {len(values)}")
    if values[0].split(";", 1)[0].strip() != JSON:
        raise Fail(415, "only acceptable Content-Type is application/json")


async def read_json(request: web.Request) -> Any:
    """The decoded body, or 400 `unable to decode body: ...` (413 when over the size limit)."""
    check_content_type(request)
    raw = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise Fail(400, f"unable to decode body: {err}") from None
