"""The dashboard's web server: standard library only (http.server with a thread per request), so
`fleetctl dashboard` stays within fleetctl's light imports (.importlinter `cli-light`).

It listens on 127.0.0.1 only and answers only requests that carry its random token (`?token=`
or the `X-Dashboard-Token` header) and name it by its own address in `Host` (no DNS rebinding):
anything else is 403. It talks to the fleet API with the same `Client` fleetctl uses, so it
reaches exactly what the user's fleetctl reaches and never opens the API to anyone else.

Live data is pushed end to end: the `Hub` (hub.py) follows the API's `GET /x/events` stream and
keeps the cluster view; every browser gets it as server-sent events (`/events`), which this
server relays from the hub's queues.
"""

from __future__ import annotations

import hmac
import json
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fleetd.api.client import APIError, Client, Unreachable
from fleetd.dashboard.hub import Hub

__all__ = ["ACTIONS", "Dashboard", "Hub"]

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
ACTIONS = {"start": "launched", "stop": "loaded", "unload": "inactive"}  # + destroy
_KEEPALIVE = 15.0  # seconds between SSE comments, which find browsers that left


class Dashboard:
    """The HTTP server: `start()` binds 127.0.0.1:port (0: a free one), `url` has the token."""

    def __init__(
        self,
        client_factory: Callable[[], Client],
        *,
        port: int = 0,
        token: str | None = None,
        endpoint: str = "",
    ) -> None:
        self.client_factory = client_factory
        self.token = token or secrets.token_urlsafe(24)
        self.endpoint = endpoint
        self.hub = Hub(client_factory)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def start(self) -> Dashboard:
        self.hub.start()
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="dashboard-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.hub.start()
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        """Stop serving (from another thread than serve_forever's)."""
        self.hub.stop()
        self.httpd.shutdown()

    def close(self) -> None:
        self.hub.stop()
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def allowed(self, token: str | None, host: str | None) -> bool:
        ok_host = host in (f"127.0.0.1:{self.port}", f"localhost:{self.port}")
        return ok_host and token is not None and hmac.compare_digest(token, self.token)


def _handler(dash: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fleetctl-dashboard"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: fleetctl prints the URL and nothing per request

        # --- plumbing ------------------------------------------------------------------
        def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None):
            self.send_response(code)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            )
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, data: Any) -> None:
            self._send(code, json.dumps(data).encode(), "application/json")

        def _error(self, code: int, message: str) -> None:
            self._json(code, {"error": {"code": code, "message": message}})

        def _authorized(self) -> tuple[str, dict[str, list[str]]] | None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            token = self.headers.get("X-Dashboard-Token") or (query.get("token") or [None])[0]
            if not dash.allowed(token, self.headers.get("Host")):
                self._send(HTTPStatus.FORBIDDEN, b"forbidden: this dashboard needs its token\n",
                           "text/plain")  # fmt: skip
                return None
            return parts.path, query

        # --- routes --------------------------------------------------------------------
        def do_GET(self) -> None:
            got = self._authorized()
            if got is None:
                return
            path, query = got
            if path == "/" or path == "/index.html":
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path.removeprefix("/static/"))
            if path == "/api/info":
                return self._json(200, {"endpoint": dash.endpoint})
            if path == "/events":
                return self._events()
            if path.startswith("/api/units/"):
                rest = path.removeprefix("/api/units/")
                name, _, what = rest.partition("/")
                name = unquote(name)
                if what == "":
                    return self._api(lambda c: c.unit(name), missing=f"Unit {name} not found")
                if what == "status":
                    return self._status(name)
                if what == "journal":
                    machine = (query.get("machineID") or [None])[0]
                    return self._journal(name, machine)
            self._error(404, "not found")

        def do_POST(self) -> None:
            got = self._authorized()
            if got is None:
                return
            path, _ = got
            prefix, _, action = path.rpartition("/")
            if not prefix.startswith("/api/units/") or prefix.count("/") != 3:
                return self._error(404, "not found")
            name = unquote(prefix.removeprefix("/api/units/"))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 16))
            if action == "destroy":
                return self._api(lambda c: {"destroyed": c.destroy_unit(name)})
            if action in ACTIONS:
                desired = ACTIONS[action]
                return self._api(lambda c: {"code": c.put_unit(name, desired_state=desired)})
            self._error(404, f"unknown action {action!r}")

        def _static(self, name: str) -> None:
            path = (STATIC / name).resolve()
            if STATIC.resolve() not in path.parents or not path.is_file():
                return self._error(404, "not found")
            body = path.read_bytes()
            if name == "index.html":  # its scripts and styles need the token too
                body = body.replace(b"{{TOKEN}}", dash.token.encode())
            self._send(200, body, _TYPES.get(path.suffix, "application/octet-stream"))

        def _api(self, call: Callable[[Client], Any], missing: str = "") -> None:
            try:
                result = call(dash.client_factory())
            except Unreachable as err:
                return self._error(502, str(err))
            except APIError as err:
                return self._error(err.code or 502, err.message)
            if result is None and missing:
                return self._error(404, missing)
            self._json(200, result)

        def _status(self, name: str) -> None:
            try:
                text = dash.client_factory().status(name)
                if not text.strip() or text == "null":
                    # fleetd rarely answers a status asked right after a start with nothing at
                    # all: ask once more (one retry, not a loop)
                    text = dash.client_factory().status(name)
            except Unreachable as err:
                return self._send(502, str(err).encode(), "text/plain")
            except APIError as err:
                return self._send(err.code or 502, err.message.encode(), "text/plain")
            self._send(200, text.encode(), "text/plain")

        # --- server-sent events --------------------------------------------------------
        def _sse_start(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._sse_write("retry: 1000\n\n")

        def _sse_write(self, text: str) -> None:
            self.wfile.write(text.encode())
            self.wfile.flush()

        def _sse_event(self, event: str, data: Any) -> None:
            payload = data if isinstance(data, str) else json.dumps(data)
            lines = "".join(f"data: {line}\n" for line in payload.split("\n"))
            self._sse_write(f"event: {event}\n{lines}\n")

        def _events(self) -> None:
            q, first = dash.hub.subscribe()
            try:
                self._sse_start()
                for event, data in first:
                    self._sse_event(event, data)
                while True:
                    try:
                        item = q.get(timeout=_KEEPALIVE)
                    except queue.Empty:
                        self._sse_write(": keepalive\n\n")  # finds a browser that left
                        continue
                    if item is None:
                        return
                    self._sse_event(*item)
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                dash.hub.unsubscribe(q)

        def _journal(self, name: str, machine: str | None) -> None:
            """The unit's journal as SSE `line` events, followed through the API."""
            chunks: Iterator[bytes] | None = None

            def follow() -> Iterator[bytes]:
                return dash.client_factory().journal(
                    name, lines=20, follow=True, machine_id=machine
                )

            try:
                chunks = follow()
                first = next(chunks, b"")
                if not first:
                    # a followed journal asked right after a start may end at once, empty
                    # (fleetd): ask once more (one retry, not a loop)
                    chunks = follow()
                    first = next(chunks, b"")
            except APIError as err:
                self._sse_start()
                self._sse_event("failed", str(err))
                return
            try:
                self._sse_start()
                pending = b""
                for chunk in _chain(first, chunks):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._sse_event("line", line.decode("utf-8", "replace"))
                self._sse_event("end", "")
            except APIError as err:
                self._sse_event("failed", str(err))
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # closes the API connection: fleetd ends journalctl

    return Handler


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
