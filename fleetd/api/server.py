"""The API server: fleet's HTTP API v1 (`/fleet/v1`, alias `/v1-alpha`) and fleetd's extensions,
on a unix socket (mode 0660, or the socket systemd hands over), optionally on TCP with mutual
TLS, and on a peer listener (mutual TLS too) other fleetds forward status/journal requests to.

Embedded in the daemon's loop with aiohttp's `AppRunner` + sites (STYLE.md). Handlers are cancelled
when their client goes away, which is what stops a followed journal (and reaps journalctl).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
import ssl
import stat
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog
from aiohttp import web

from fleetd import __version__
from fleetd.api import events, extensions, machines, restart, state, units
from fleetd.api.pagination import PageToken, TokenError, token_from_query
from fleetd.api.serialization import Fail, error_response, failure_of, json_response
from fleetd.api.units import current_state, units_of
from fleetd.metrics import METRICS
from fleetd.registry import EtcdUnavailable, Registry, Snapshot, WatchCompacted

__all__ = ["MAX_BODY", "PREFIXES", "APIServer", "Context", "Inspector", "TLSFiles"]

log = structlog.get_logger(__name__)

PREFIXES = ("/fleet/v1", "/v1-alpha")
MAX_BODY = 1 << 20  # bytes of request body accepted (413 beyond)
_LISTINGS_KEPT = 4  # recent snapshots kept for the next pages of listings
_SD_LISTEN_FDS_START = 3


class Inspector(Protocol):
    """This machine's systemd, as far as the API needs it (SystemdManager fits)."""

    def journal(self, name: str, *, lines: int | None = ..., follow: bool = ...) -> Any: ...

    async def status(self, name: str) -> str: ...


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


@dataclass
class Metrics:
    requests: Counter[int] = field(default_factory=Counter)
    etcd_errors: int = 0


class SharedSnapshots:
    """Concurrent readers share etcd reads, without ever reading stale.

    A reader gets a snapshot whose read *started after it asked*, so it sees every write
    acknowledged before its request; all readers that ask while a read is running share the
    next read. A burst of N list requests costs two reads of etcd, not N.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.reads = 0
        self._waiting: asyncio.Future[Snapshot] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def get(self) -> Snapshot:
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            self._waiting.add_done_callback(_retrieve)
        waiting = self._waiting
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        return await asyncio.shield(waiting)

    async def _read(self) -> None:
        try:
            while self._waiting is not None:
                waiting, self._waiting = self._waiting, None
                try:
                    snapshot = await self.registry.snapshot()
                except Exception as err:  # handed to the readers, who answer 503/500
                    waiting.set_exception(err)
                else:
                    waiting.set_result(snapshot)
                self.reads += 1
        finally:
            self._reader = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._waiting is not None and not self._waiting.done():
            self._waiting.cancel()


def _retrieve(future: asyncio.Future[Snapshot]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "never retrieved" warning when every reader left


@dataclass
class Context:
    """What every handler needs: the registry, who we are, how to reach the other machines."""

    registry: Registry
    machine_id: str
    inspector: Inspector | None
    peer_url: Callable[[str], str | None] | None
    token_limit: int
    version: str
    metrics: Metrics = field(default_factory=Metrics)
    session: aiohttp.ClientSession | None = None
    peer_ssl: ssl.SSLContext | None = None  # the client side of the peer listeners' mTLS
    snapshots: SharedSnapshots = field(init=False)
    _units: tuple[int, list[dict[str, Any]]] = (-1, [])
    _unit_cache: dict[str, tuple[tuple[object, ...], dict[str, Any] | None]] = field(
        default_factory=dict
    )
    _listings: OrderedDict[int, Snapshot] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.snapshots = SharedSnapshots(self.registry)

    async def snapshot(self) -> Snapshot:
        """The registry at one revision, read after this call began (shared with others)."""
        snapshot = await self.snapshots.get()
        self._listings[snapshot.revision] = snapshot
        while len(self._listings) > _LISTINGS_KEPT:
            self._listings.popitem(last=False)
        return snapshot

    async def listing(self, tok: PageToken) -> Snapshot:
        """The snapshot a page is cut from: a fresh one for a first page; for the next pages,
        the one the first page was cut from (its revision is in the token), kept from then or
        read again at that revision; a fresh one if etcd compacted it meanwhile."""
        if tok.revision:
            kept = self._listings.get(tok.revision)
            if kept is not None:
                return kept
            with contextlib.suppress(WatchCompacted):
                return await self.registry.snapshot(tok.revision)
        return await self.snapshot()

    def units_of(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        """Every unit as JSON, computed once per revision; a unit whose job, content,
        placement and state are the same objects as at the last revision is not computed
        again (snapshots share the documents of unchanged keys)."""
        if self._units[0] != snapshot.revision:
            self._units = (snapshot.revision, units_of(snapshot, self._unit_cache))
        return self._units[1]

    def page_token(self, request: web.Request) -> PageToken:
        try:
            return token_from_query(request.query.getall("nextPageToken", []), self.token_limit)
        except TokenError as err:
            raise Fail(400, str(err)) from None

    def peer_tls(self) -> dict[str, Any]:
        """The TLS argument of a request to another machine's peer listener."""
        return {"ssl": self.peer_ssl} if self.peer_ssl is not None else {}

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        return self.session


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
        self.ctx = Context(registry, machine_id, inspector, peer_url, token_limit, version)
        self.ctx.peer_ssl = peer_ssl
        self.max_body = max_body
        self.unix_path: str | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.peer_address: tuple[str, int] | None = None
        self._runners: list[web.AppRunner] = []
        self._owned_socket: str | None = None

    # --- applications ----------------------------------------------------------------------
    def _app(self, *, peer: bool = False) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[self._middleware])
        app.on_response_prepare.append(self._server_header)
        app.on_shutdown.append(events.on_shutdown)
        if peer:
            app.add_routes(extensions.routes(self.ctx, extensions.LOCAL, peer=True))
            return app
        for prefix in PREFIXES:
            for resource in (units, state, machines, extensions, events, restart):
                app.add_routes(resource.routes(self.ctx, prefix))
            app.add_routes([
                web.route("*", f"{prefix}/discovery", self._discovery),
                web.route("*", prefix, self._not_allowed),
            ])  # fmt: skip
        app.add_routes([
            web.get("/metrics", self._metrics),
            web.route("*", "/", self._not_allowed),
        ])  # fmt: skip
        return app

    async def _server_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = f"fleetd/{self.ctx.version}"

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            response = error_response(
                413, f"request body too large: at most {self.max_body} bytes are accepted"
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
                self.ctx.metrics.etcd_errors += 1
            response = error_response(*answer, **(err.extra if isinstance(err, Fail) else {}))
        self.ctx.metrics.requests[response.status] += 1
        return response

    async def _discovery(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            raise Fail(400, "only GET supported against this resource")
        return json_response(_discovery(self.ctx.version))

    async def _not_allowed(self, request: web.Request) -> web.Response:
        raise Fail(405)

    async def _metrics(self, request: web.Request) -> web.Response:
        m = self.ctx.metrics
        lines = []
        try:
            snapshot = await self.ctx.snapshot()
        except EtcdUnavailable:
            m.etcd_errors += 1
            snapshot = None
        if snapshot is not None:
            desired = Counter(job.desired.value for job in snapshot.jobs.values())
            current = Counter(current_state(snapshot, job) or "global"
                              for job in snapshot.jobs.values())  # fmt: skip
            lines += ["# HELP fleetd_units Units by desired state.", "# TYPE fleetd_units gauge"]
            lines += [f'fleetd_units{{desired_state="{s}"}} {n}'
                      for s, n in sorted(desired.items())]  # fmt: skip
            lines += ["# HELP fleetd_units_current Units by current state.",
                      "# TYPE fleetd_units_current gauge"]  # fmt: skip
            lines += [f'fleetd_units_current{{current_state="{s}"}} {n}'
                      for s, n in sorted(current.items())]  # fmt: skip
            lines += ["# HELP fleetd_machines Live machines.", "# TYPE fleetd_machines gauge",
                      f"fleetd_machines {len(snapshot.machines)}"]  # fmt: skip
        lines += ["# HELP fleetd_api_requests_total API requests answered, by status code.",
                  "# TYPE fleetd_api_requests_total counter"]  # fmt: skip
        lines += [f'fleetd_api_requests_total{{code="{c}"}} {n}'
                  for c, n in sorted(m.requests.items())]  # fmt: skip
        lines += METRICS.render()  # the engine's and the agent's own counters
        lines += ["# HELP fleetd_api_etcd_errors_total Requests that failed on etcd.",
                  "# TYPE fleetd_api_etcd_errors_total counter",
                  f"fleetd_api_etcd_errors_total {m.etcd_errors}"]  # fmt: skip
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    # --- listeners -------------------------------------------------------------------------
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
            sock = _activated_socket()
            if sock is None and unix_path is not None:
                sock = self._bind_unix(str(unix_path), socket_group)
            main = web.AppRunner(self._app(), handler_cancellation=True, access_log=None)
            await main.setup()
            self._runners.append(main)
            if sock is not None:
                await web.SockSite(main, sock).start()
            if tcp is not None:
                ctx = tls if isinstance(tls, ssl.SSLContext) else tls.server_context()  # type: ignore[union-attr]
                tcp_sock = socket.create_server(tcp)
                self.tcp_address = tcp_sock.getsockname()[:2]
                await web.SockSite(main, tcp_sock, ssl_context=ctx).start()
            if peer is not None:
                runner = web.AppRunner(self._app(peer=True), handler_cancellation=True,
                                       access_log=None)  # fmt: skip
                await runner.setup()
                self._runners.append(runner)
                pctx = (
                    peer_tls if isinstance(peer_tls, ssl.SSLContext)
                    else peer_tls.server_context()  # type: ignore[union-attr]
                )  # fmt: skip
                peer_sock = socket.create_server(peer)
                self.peer_address = peer_sock.getsockname()[:2]
                await web.SockSite(runner, peer_sock, ssl_context=pctx).start()
        except BaseException:
            await self.stop()
            raise
        log.info("api.listening", unix=self.unix_path, tcp=self.tcp_address, peer=self.peer_address)

    def _bind_unix(self, path: str, group: str | None) -> socket.socket:
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
        self.unix_path = self._owned_socket = path
        return sock

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.ctx.snapshots.close()
        if self.ctx.session is not None:
            await self.ctx.session.close()
            self.ctx.session = None
        if self._owned_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._owned_socket)
            self._owned_socket = None
        log.info("api.stopped")

    async def __aenter__(self) -> APIServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _activated_socket() -> socket.socket | None:
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

