"""The API server: fleet's HTTP API v1 (`/fleet/v1`, alias `/v1-alpha`) and fleetd's extensions,
on a unix socket (mode 0660, or the socket systemd hands over), optionally on TCP with mutual
TLS, and on a peer listener (mutual TLS too) other fleetds forward status/journal requests to.

Embedded in the daemon's loop with aiohttp's `AppRunner` + sites (STYLE.md). Handlers are cancelled
when their client goes away, which is what stops a followed journal (and reaps journalctl).
What is served is built in `fleetd.api.app`, how sockets are bound and secured in
`fleetd.api.listeners`; this module opens and closes them, in that order and in reverse.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Callable

import structlog
from aiohttp import web

from fleetd import __version__
from fleetd.api.app import MAX_BODY, PREFIXES, Metrics, application
from fleetd.api.context import Context, Inspector, Peers
from fleetd.api.listeners import TLSFiles, activated_socket, bind_unix, server_context
from fleetd.registry import Registry

__all__ = ["MAX_BODY", "PREFIXES", "APIServer", "Inspector", "TLSFiles"]

log = structlog.get_logger(__name__)


class APIServer:
    """fleet's API v1 for one machine; `start()` opens the listeners, `stop()` closes them."""

    def __init__(
        self,
        registry: Registry,
        machine_id: str,
        *,
        inspector: Inspector | None = None,
        peer_url: Callable[[str, str], str | None] | None = None,
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
