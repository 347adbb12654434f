"""The API's aiohttp applications: every resource's routes under fleet's prefixes (`/fleet/v1`,
alias `/v1-alpha`), the discovery document and `/metrics`; or, for the peer listener, a unit's
status and journal on this machine only. Errors of any handler are answered in fleet's shape
here, once (`failure_of`), and counted for `/metrics`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from fleetd.api import (
    capacity,
    cordons,
    events,
    machines,
    restart,
    rollouts,
    state,
    status,
    units,
    wait,
    why,
)
from fleetd.api.context import Context, Peers
from fleetd.api.serialization import Fail, error_response, failure_of, json_response
from fleetd.api.streams import on_shutdown
from fleetd.metrics import METRICS, gauge
from fleetd.model import DrainState, Phase, RolloutState
from fleetd.reconcile.capacity import cluster_use
from fleetd.reconcile.waiting import current_state
from fleetd.registry import EtcdUnavailable, Snapshot

__all__ = ["MAX_BODY", "PREFIXES", "Metrics", "application"]

log = structlog.get_logger(__name__)

PREFIXES = ("/fleet/v1", "/v1-alpha")
MAX_BODY = 1 << 20  # bytes of request body accepted (413 beyond)


@dataclass
class Metrics:
    """This fleetd's API counters for `/metrics`: answers by status, requests failed on etcd."""

    requests: Counter[int] = field(default_factory=Counter)
    etcd_errors: int = 0


def application(
    ctx: Context, peers: Peers, metrics: Metrics, *, version: str, max_body: int, peer: bool
) -> web.Application:
    """The public API (peer=False), or the peer listener's status and journal (peer=True)."""

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            response = error_response(
                413, f"request body too large: at most {max_body} bytes are accepted"
            )
        except web.HTTPException as exc:  # no such route / method
            response = error_response(exc.status, exc.reason if exc.status != 404 else "")
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            raise  # the client left mid-stream: nothing to answer
        except Exception as err:
            answer = failure_of(err, what=request.path)
            if answer is None:
                log.exception("api.crashed", method=request.method, path=request.path)
                answer = (500, "")
            elif not isinstance(err, Fail):
                metrics.etcd_errors += 1
            response = error_response(*answer, **(err.extra if isinstance(err, Fail) else {}))
        metrics.requests[response.status] += 1
        return response

    async def server_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = f"fleetd/{version}"

    async def discovery(request: web.Request) -> web.Response:
        if request.method != "GET":
            raise Fail(400, "only GET supported against this resource")
        return json_response(_discovery(version))

    async def not_allowed(request: web.Request) -> web.Response:
        raise Fail(405)

    specs: dict[str, Any] = {}  # the units' requirements, kept between scrapes (`job_specs`)

    async def metrics_text(request: web.Request) -> web.Response:
        try:
            snapshot = await ctx.snapshot()
        except EtcdUnavailable:
            metrics.etcd_errors += 1
            snapshot = None
        lines = [] if snapshot is None else _cluster_lines(snapshot)
        if snapshot is not None:
            lines += _machine_lines(snapshot, peers.machine_id, specs)
        lines += _counter_lines(metrics)
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application(client_max_size=max_body, middlewares=[middleware])
    app.on_response_prepare.append(server_header)
    app.on_shutdown.append(on_shutdown)
    if peer:
        app.add_routes(status.peer_routes(peers))
        return app
    for prefix in PREFIXES:
        for resource in (units, state, machines):
            app.add_routes(resource.routes(ctx, prefix))
        app.add_routes(status.routes(ctx, peers, prefix))
        for resource in (wait, events, restart, why, capacity, rollouts, cordons):
            app.add_routes(resource.routes(ctx, prefix))
        app.add_routes([
            web.route("*", f"{prefix}/discovery", discovery),
            web.route("*", prefix, not_allowed),
        ])  # fmt: skip
    app.add_routes([
        web.get("/metrics", metrics_text),
        web.route("*", "/", not_allowed),
    ])  # fmt: skip
    return app


# --- /metrics --------------------------------------------------------------------------------
def _cluster_lines(snapshot: Snapshot) -> list[str]:
    """The cluster's gauges: units by desired and by current state, live machines."""
    desired = Counter(job.desired.value for job in snapshot.jobs.values())
    current = Counter(current_state(snapshot, job) or "global"
                      for job in snapshot.jobs.values())  # fmt: skip
    lines = ["# HELP fleetd_units Units by desired state.", "# TYPE fleetd_units gauge"]
    lines += [f'fleetd_units{{desired_state="{s}"}} {n}'
              for s, n in sorted(desired.items())]  # fmt: skip
    lines += ["# HELP fleetd_units_current Units by current state.",
              "# TYPE fleetd_units_current gauge"]  # fmt: skip
    lines += [f'fleetd_units_current{{current_state="{s}"}} {n}'
              for s, n in sorted(current.items())]  # fmt: skip
    lines += ["# HELP fleetd_machines Live machines.", "# TYPE fleetd_machines gauge",
              f"fleetd_machines {len(snapshot.machines)}"]  # fmt: skip
    rollouts = Counter(str(r.state) for r in snapshot.rollouts.values())
    lines += ["# HELP fleetd_rollouts Rollouts the cluster keeps, by state (running, paused, "
              "canary, reverting, failed: not over; done, reverted, cancelled: the last one "
              "of each unit).", "# TYPE fleetd_rollouts gauge"]  # fmt: skip
    lines += [f'fleetd_rollouts{{state="{s}"}} {rollouts.get(s, 0)}' for s in RolloutState]
    instances = Counter(
        str(t.phase) for r in snapshot.rollouts.values() if not r.state.finished for t in r.targets
    )
    lines += ["# HELP fleetd_rollout_instances Instances of the rollouts not over, by phase.",
              "# TYPE fleetd_rollout_instances gauge"]  # fmt: skip
    lines += [f'fleetd_rollout_instances{{phase="{p}"}} {instances.get(p, 0)}' for p in Phase]
    cordons = Counter(str(c.state) for c in snapshot.cordons.values())
    lines += ["# HELP fleetd_cordoned_machines Machines taking no new placements, by state.",
              "# TYPE fleetd_cordoned_machines gauge"]  # fmt: skip
    lines += [f'fleetd_cordoned_machines{{state="{s}"}} {cordons.get(s, 0)}' for s in DrainState]
    return lines


def _machine_lines(snapshot: Snapshot, machine_id: str, specs: dict[str, Any]) -> list[str]:
    """This machine's capacity and what its units reserve of it (`reconcile/capacity.py`):
    each fleetd tells of its own machine, so scraping them all gives every machine once."""
    use = cluster_use(snapshot, specs, only=(machine_id,)).machines.get(machine_id)
    if use is None:  # not registered (yet)
        return []
    me = {"machine": machine_id}
    lines = []
    for dimension, amount, unit in (("memory", use.memory, "_bytes"), ("cpus", use.cpus, "")):
        if amount.capacity is not None:
            lines += gauge(
                f"fleetd_machine_{dimension}_capacity{unit}",
                f"{dimension.capitalize()} this machine offers to units (measured, less what "
                "is held back for the host).",
                [(me, amount.capacity)],
            )
        lines += gauge(
            f"fleetd_machine_{dimension}_reserved{unit}",
            f"{dimension.capitalize()} reserved by the units on this machine (placed there, "
            "and the Global units it runs).",
            [(me, amount.reserved)],
        )
    lines += gauge(
        "fleetd_machine_overcommitted",
        "1 when the units on this machine reserve more memory or CPUs than it offers.",
        [(me, int(use.overcommitted))],
    )
    return lines


def _counter_lines(m: Metrics) -> list[str]:
    """This fleetd's counters: API answers by status, the engine's and agent's, etcd errors."""
    lines = ["# HELP fleetd_api_requests_total API requests answered, by status code.",
             "# TYPE fleetd_api_requests_total counter"]  # fmt: skip
    lines += [f'fleetd_api_requests_total{{code="{c}"}} {n}'
              for c, n in sorted(m.requests.items())]  # fmt: skip
    lines += METRICS.render()  # the engine's and the agent's own counters
    lines += ["# HELP fleetd_api_etcd_errors_total Requests that failed on etcd.",
              "# TYPE fleetd_api_etcd_errors_total counter",
              f"fleetd_api_etcd_errors_total {m.etcd_errors}"]  # fmt: skip
    return lines


# --- /discovery ------------------------------------------------------------------------------
def _discovery(version: str) -> dict[str, Any]:
    """fleetd's discovery document: the resources of API v1 and the extensions, in brief."""
    unit = {"name": "string", "options": [{"section": "string", "name": "string",
            "value": "string"}], "desiredState": "inactive|loaded|launched",
            "currentState": "inactive|loaded|launched", "machineID": "string"}  # fmt: skip
    return {
        "kind": "discovery#restDescription",
        "id": "fleet:v1",
        "name": "fleet",
        "version": "v1",
        "title": "fleet API",
        "description": "fleetd's implementation of CoreOS fleet's HTTP API v1",
        "fleetdVersion": version,
        "protocol": "rest",
        "servicePath": "fleet/v1/",
        "schemas": {
            "Unit": unit,
            "UnitPage": {"units": ["Unit"], "nextPageToken": "string"},
            "UnitState": {
                "name": "string",
                "hash": "string",
                "machineID": "string",
                "systemdLoadState": "string",
                "systemdActiveState": "string",
                "systemdSubState": "string",
            },
            "UnitStatePage": {"states": ["UnitState"], "nextPageToken": "string"},
            "Machine": {"id": "string", "primaryIP": "string", "metadata": {"key": "value"}},
            "MachinePage": {"machines": ["Machine"], "nextPageToken": "string"},
            "Error": {"error": {"code": "integer", "message": "string"}},
        },
        "resources": {
            "Units": {
                "methods": {
                    "List": {"httpMethod": "GET", "path": "units", "parameters": ["nextPageToken"]},
                    "Get": {"httpMethod": "GET", "path": "units/{unitName}"},
                    "Set": {"httpMethod": "PUT", "path": "units/{unitName}", "request": "Unit"},
                    "Delete": {"httpMethod": "DELETE", "path": "units/{unitName}"},
                }
            },
            "UnitState": {
                "methods": {
                    "List": {
                        "httpMethod": "GET",
                        "path": "state",
                        "parameters": ["nextPageToken", "unitName", "machineID"],
                    },
                }
            },
            "Machines": {
                "methods": {
                    "List": {
                        "httpMethod": "GET",
                        "path": "machines",
                        "parameters": ["nextPageToken"],
                    },
                    "Patch": {"httpMethod": "PATCH", "path": "machines"},
                }
            },
            "Extensions": {
                "methods": {
                    "Status": {"httpMethod": "GET", "path": "x/units/{unitName}/status"},
                    "Journal": {
                        "httpMethod": "GET",
                        "path": "x/units/{unitName}/journal",
                        "parameters": ["lines", "follow", "machineID"],
                    },
                    "Wait": {"httpMethod": "POST", "path": "x/wait"},
                    "Restart": {"httpMethod": "POST", "path": "x/units/{unitName}/restart"},
                    "Why": {"httpMethod": "GET", "path": "x/why/{unitName}"},
                    "Unplaced": {"httpMethod": "GET", "path": "x/unplaced"},
                    "MachinesUse": {"httpMethod": "GET", "path": "x/machines"},
                }
            },
        },
    }
