"""The API server: fleet's HTTP API v1 (`/fleet/v1`, alias `/v1-alpha`) and fleetd's extensions,
on a unix socket (mode 0660, or the socket systemd hands over), optionally on TCP with mutual
TLS, and on a peer listener (mutual TLS too) other fleetds forward status/journal requests to.

Embedded in the daemon's loop with aiohttp's `AppRunner` + sites (STYLE.md). Handlers are cancelled
when their client goes away, which is what stops a followed journal (and reaps journalctl).
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import ssl
import stat
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from fleetd import __version__
from fleetd.api import events, machines, restart, state, status, units, wait
from fleetd.api.context import Context, Inspector, Peers
from fleetd.api.serialization import Fail, error_response, failure_of, json_response
from fleetd.api.streams import on_shutdown
from fleetd.metrics import METRICS
from fleetd.reconcile.waiting import current_state
from fleetd.registry import EtcdUnavailable, Registry, Snapshot

__all__ = ["MAX_BODY", "PREFIXES", "APIServer", "Inspector", "TLSFiles"]

log = structlog.get_logger(__name__)

_SD_LISTEN_FDS_START = 3


@dataclass(frozen=True)
class TLSFiles:
    """The TCP listener's certificate and key, and the CA its clients' certificates must be from."""

    cert: str
    key: str
    ca: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """How a fleetd forwarding to another machine's peer listener connects: it presents
        this certificate and accepts a server whose certificate the CA signed. The server's
        name is not checked (machines are known by ID and IP, which certificates need not
        carry): any certificate of the cluster's CA is a fleetd of the cluster."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def server_context(tls: TLSFiles | ssl.SSLContext) -> ssl.SSLContext:
    """A listener's TLS: the files' server side, or a context the caller made itself."""
    return tls if isinstance(tls, ssl.SSLContext) else tls.server_context()


def bind_unix(path: str, group: str | None) -> socket.socket:
    """A listening unix socket at `path`, mode 0660 (group `group` when named) before anyone
    can connect; a stale socket of a previous fleetd is replaced, any other file refused."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        os.unlink(path)  # a stale socket of a previous fleetd
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)  # before listen(): nobody can connect with looser rights
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        sock.listen(128)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    sock.setblocking(False)
    return sock


def activated_socket() -> socket.socket | None:
    """The unix socket systemd passed (fd 3) when LISTEN_PID names this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    sock = socket.socket(fileno=_SD_LISTEN_FDS_START)
    sock.setblocking(False)
    log.info("api.socket_activated", fd=_SD_LISTEN_FDS_START, family=sock.family.name)
    return sock


PREFIXES = ("/fleet/v1", "/v1-alpha")
MAX_BODY = 1 << 20  # bytes of request body accepted (413 beyond)


@dataclass
class Metrics:
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

    async def metrics_text(request: web.Request) -> web.Response:
        try:
            snapshot = await ctx.snapshot()
        except EtcdUnavailable:
            metrics.etcd_errors += 1
            snapshot = None
        lines = [] if snapshot is None else _cluster_lines(snapshot)
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
        for resource in (wait, events, restart):
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
            "UnitState": {"name": "string", "hash": "string", "machineID": "string",
                          "systemdLoadState": "string", "systemdActiveState": "string",
                          "systemdSubState": "string"},
            "UnitStatePage": {"states": ["UnitState"], "nextPageToken": "string"},
            "Machine": {"id": "string", "primaryIP": "string", "metadata": {"key": "value"}},
            "MachinePage": {"machines": ["Machine"], "nextPageToken": "string"},
            "Error": {"error": {"code": "integer", "message": "string"}},
        },
        "resources": {
            "Units": {"methods": {
                "List": {"httpMethod": "GET", "path": "units", "parameters": ["nextPageToken"]},
                "Get": {"httpMethod": "GET", "path": "units/{unitName}"},
                "Set": {"httpMethod": "PUT", "path": "units/{unitName}", "request": "Unit"},
                "Delete": {"httpMethod": "DELETE", "path": "units/{unitName}"},
            }},
            "UnitState": {"methods": {
                "List": {"httpMethod": "GET", "path": "state",
                         "parameters": ["nextPageToken", "unitName", "machineID"]},
            }},
            "Machines": {"methods": {
                "List": {"httpMethod": "GET", "path": "machines",
                         "parameters": ["nextPageToken"]},
                "Patch": {"httpMethod": "PATCH", "path": "machines"},
            }},
            "Extensions": {"methods": {
                "Status": {"httpMethod": "GET", "path": "x/units/{unitName}/status"},
                "Journal": {"httpMethod": "GET", "path": "x/units/{unitName}/journal",
                            "parameters": ["lines", "follow", "machineID"]},
                "Wait": {"httpMethod": "POST", "path": "x/wait"},
                "Restart": {"httpMethod": "POST", "path": "x/units/{unitName}/restart"},
            }},
        },
    }


class APIServer:
    """fleet's API v1 for one machine; `start()` opens the listeners, `stop()` closes them."""

    def __init__(
        self,
        registry: Registry,
        machine_id: str,
        *,
        inspector: Inspector | None = None,
        peer_url: Callable[[str], str | None] | None = None,
        peer_ssl: ssl.SSLContext | None = None,
        token_limit: int = 100,
        version: str = __version__,
        max_body: int = MAX_BODY,
    ) -> None:
        if not 1 <= token_limit <= 0xFFFF:
            raise ValueError("token_limit must be between 1 and 65535")
        self.ctx = Context(registry, token_limit)
        self.peers = Peers(machine_id, inspector, peer_url, peer_ssl)
        self.metrics = Metrics()
        self.version = version
        self.max_body = max_body
        self.unix_path: str | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.peer_address: tuple[str, int] | None = None
        self._runners: list[web.AppRunner] = []
        self._owned_socket: str | None = None

    async def start(
        self,
        unix_path: str | os.PathLike[str] | None = None,
        *,
        socket_group: str | None = None,
        tcp: tuple[str, int] | None = None,
        tls: TLSFiles | ssl.SSLContext | None = None,
        peer: tuple[str, int] | None = None,
        peer_tls: TLSFiles | ssl.SSLContext | None = None,
    ) -> None:
        """Listen on the activated socket (LISTEN_FDS) or `unix_path`; on `tcp` with `tls`
        (client certificates required); and on `peer` with `peer_tls` (status/journal only,
        to clients with a certificate of the cluster's CA)."""
        if tcp is not None and tls is None:
            raise ValueError("the TCP API listener needs TLS (certificate, key and client CA)")
        if peer is not None and peer_tls is None:
            raise ValueError("the peer listener needs TLS (certificate, key and client CA)")
        try:
            sock = activated_socket()
            if sock is None and unix_path is not None:
                sock = bind_unix(str(unix_path), socket_group)
                self.unix_path = self._owned_socket = str(unix_path)
            main = await self._runner(peer=False)
            if sock is not None:
                await web.SockSite(main, sock).start()
            if tcp is not None and tls is not None:
                tcp_sock = socket.create_server(tcp)
                self.tcp_address = tcp_sock.getsockname()[:2]
                await web.SockSite(main, tcp_sock, ssl_context=server_context(tls)).start()
            if peer is not None and peer_tls is not None:
                runner = await self._runner(peer=True)
                peer_sock = socket.create_server(peer)
                self.peer_address = peer_sock.getsockname()[:2]
                await web.SockSite(runner, peer_sock, ssl_context=server_context(peer_tls)).start()
        except BaseException:
            await self.stop()
            raise
        log.info("api.listening", unix=self.unix_path, tcp=self.tcp_address, peer=self.peer_address)

    async def _runner(self, *, peer: bool) -> web.AppRunner:
        app = application(self.ctx, self.peers, self.metrics, version=self.version,
                          max_body=self.max_body, peer=peer)  # fmt: skip
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.ctx.close()
        await self.peers.close()
        if self._owned_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._owned_socket)
            self._owned_socket = None
        log.info("api.stopped")

    async def __aenter__(self) -> APIServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
