"""How a request reaches the fleet API and how its answer comes back: endpoints (`unix://`,
`http://`, `https://` with a CA and a client certificate, or through a --tunnel's socket), one
connection per call, error answers decoded into `APIError`s, pages and streamed lines.

Standard library only (http.client, ssl), so fleetctl starts fast. `fleetd.api.client.Client`
puts fleet's API on top: what a connection is lives here, what a unit is lives there."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import stat
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

__all__ = [
    "DEFAULT_ENDPOINT",
    "PREFIX",
    "APIError",
    "BadEndpoint",
    "BadTLSFile",
    "CannotConnect",
    "MachineUnreachable",
    "Transport",
    "Unreachable",
]

DEFAULT_ENDPOINT = "unix:///var/run/fleet.sock"
PREFIX = "/fleet/v1"


class APIError(Exception):
    """An error answer of the API, decoded from fleet's `{"error":{"code","message"}}`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class Unreachable(APIError):
    """The API could not be reached at all; the message names the endpoint."""


class CannotConnect(Unreachable):
    """Nothing serves the API at the endpoint (no socket file, connection refused, no answer
    to the connection, unknown host): no request was sent. The message says why in the OS's
    words."""


class MachineUnreachable(APIError):
    """The API could not reach the unit's machine (a 502 whose `reason` is
    `machineUnreachable`): `machines` are the (ID, public IP) of every machine the request
    concerned, for the caller to go there itself (fleetctl runs the command over SSH)."""

    def __init__(self, code: int, message: str, machines: list[tuple[str, str]]) -> None:
        super().__init__(code, message)
        self.machines = machines


class BadEndpoint(APIError, ValueError):
    """An endpoint string that names no API (fleet's messages); code 0."""


class BadTLSFile(APIError, ValueError):
    """A CA, certificate or key file that cannot be read or holds no certificate/key; code 0.

    `option` is the Client argument it came from (`ca_file`, `cert_file`, `key_file`), so a
    caller can name its own flag; `reason` says why (the OS's words for a file it cannot read).
    """

    def __init__(self, option: str, path: str, reason: str) -> None:
        super().__init__(0, f"{option} {path}: {reason}")
        self.option, self.path, self.reason = option, path, reason


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("domain-sock", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = _unix_socket(self._path, self.timeout)


class _TunnelledHTTPS(http.client.HTTPSConnection):
    """HTTPS to `host` over a unix socket that leads there (the TLS name is still `host`)."""

    def __init__(
        self, path: str, host: str, port: int | None, timeout: float | None, ctx: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._path = path
        self._ctx = ctx

    def connect(self) -> None:
        sock = _unix_socket(self._path, self.timeout)
        try:
            self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _unix_socket(path: str, timeout: float | None) -> socket.socket:
    """A stream socket connected to the unix socket at `path` (closed again if that fails)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _parse_endpoint(endpoint: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, unix path) of the first endpoint of a comma list."""
    first = endpoint.split(",")[0].strip()
    try:
        parts = urlsplit(first)
    except ValueError as err:  # "Invalid IPv6 URL"
        raise BadEndpoint(0, f"invalid endpoint {first!r}: {err}") from None
    if not parts.scheme:
        raise BadEndpoint(0, "URL scheme undefined")
    unusable = f'unable to connect to host "{parts.netloc}" with scheme "{parts.scheme}"'
    if parts.scheme == "unix":
        if parts.netloc:
            raise BadEndpoint(0, unusable)
        if not parts.path:
            raise BadEndpoint(0, f"no socket path in endpoint {first!r}")
        return "unix", "", None, parts.path
    if parts.scheme not in ("http", "https"):
        raise BadEndpoint(0, unusable)
    if not parts.hostname:
        raise BadEndpoint(0, f"no host in endpoint {first!r}")
    try:
        port = parts.port
    except ValueError as err:
        raise BadEndpoint(0, f"invalid port in endpoint {first!r}: {err}") from None
    return parts.scheme, parts.hostname, port, ""


class Transport:
    """One fleet API endpoint, reached synchronously: each call opens one connection (fleetctl
    makes few calls; no pool to keep right), a listing's pages share one kept alive."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 3.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        via: str | None = None,
    ) -> None:
        self.endpoint = endpoint.split(",")[0].strip()
        self.timeout = timeout
        self._scheme, self._host, self._port, self._path = _parse_endpoint(endpoint)
        self._via = via  # a unix socket that leads to the endpoint (fleetctl --tunnel)
        self._ssl: ssl.SSLContext | None = None
        if self._scheme == "https" or ca_file or cert_file or key_file:
            # Files given are read whatever the scheme, as fleet did: a wrong path is said at once.
            self._ssl = _tls_context(ca_file, cert_file, key_file)

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._via is not None:
            if self._scheme == "https":
                assert self._ssl is not None
                return _TunnelledHTTPS(self._via, self._host, self._port, timeout, self._ssl)
            return _UnixConnection(self._via, timeout)
        if self._scheme == "unix":
            return _UnixConnection(self._path, timeout)
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        """Open the connection before the request, so that an API nobody serves (CannotConnect)
        is told apart from one lost during a request (Unreachable)."""
        try:
            conn.connect()
        except ssl.SSLError as err:
            conn.close()
            msg = f"TLS handshake with the fleet API at {self.endpoint} failed: {_ssl_reason(err)}"
            raise Unreachable(0, msg) from err
        except OSError as err:
            conn.close()
            timeout = self.timeout if conn.timeout is None else conn.timeout
            why = _connect_failure(err, self._path, timeout)
            if isinstance(err, PermissionError):
                msg = f"unable to reach the fleet API at {self.endpoint}: {why}"
                raise Unreachable(0, msg) from err
            raise CannotConnect(0, f"cannot reach the fleet API at {self.endpoint}: {why}") from err

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
        stream: bool = False,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        params = {**(query or {}), "alt": "json"}
        url = f"{PREFIX}{path}?{urlencode(params)}"
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        reused = conn is not None and conn.sock is not None
        if conn is None:
            conn = self._connection(self.timeout if timeout is None else timeout)
        if conn.sock is None:
            self._connect(conn)
        try:
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not (reused and method == "GET"):
                    raise
                conn.close()  # the server closed the kept-alive connection: a GET again
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            msg = f"unable to reach the fleet API at {self.endpoint}: {err}"
            raise Unreachable(0, msg) from err
        if stream and conn.sock is not None:
            conn.sock.settimeout(None)  # a stream waits as long as the server keeps it open
        if resp.status >= 400:
            raw = resp.read()
            conn.close()
            raise _error(resp.status, raw)
        return conn, resp

    def _call(
        self, method: str, path: str, *, keep: http.client.HTTPConnection | None = None, **kw: Any
    ) -> tuple[int, Any]:
        """One request; on `keep`, a connection kept open for the caller's next request."""
        conn, resp = self._open(method, path, conn=keep, **kw)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise Unreachable(0, f"lost the fleet API at {self.endpoint}: {err}") from err
        if keep is None:
            conn.close()
        if not raw:
            return resp.status, None
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def _all_pages(self, path: str, key: str, query: dict[str, str]) -> list[dict]:
        """Every page of a listing, over one kept-alive connection."""
        items: list[dict] = []
        token: str | None = None
        conn = self._connection(self.timeout)
        try:
            while True:
                q = dict(query)
                if token:
                    q["nextPageToken"] = token
                _, page = self._call("GET", path, query=q, keep=conn)
                items.extend((page or {}).get(key) or [])
                token = (page or {}).get("nextPageToken")
                if not token:
                    return items
        finally:
            conn.close()

    def _stream(
        self, method: str, path: str, *, endless: bool, lines: bool = True, **kw: Any
    ) -> Iterator[bytes]:
        """A streamed answer, line by line (or chunk by chunk) as it comes; its end is Unreachable
        when the stream should never end (`endless`), else the end of the iteration."""
        conn, resp = self._open(method, path, stream=True, **kw)
        try:
            while True:
                try:
                    piece = resp.readline() if lines else resp.read1(65536)
                except (OSError, http.client.HTTPException) as err:
                    raise Unreachable(0, f"lost the fleet API at {self.endpoint}: {err}") from err
                if not piece:
                    if endless:
                        raise Unreachable(0, f"lost the fleet API at {self.endpoint}: stream ended")
                    return
                yield piece
        finally:
            conn.close()


def _connect_failure(err: OSError, unix_path: str, timeout: float | None) -> str:
    """Why a connection could not be opened, in the OS's words (and what the socket path is)."""
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err.strerror or err})"
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    reason = err.strerror or str(err)
    if unix_path and isinstance(err, ConnectionRefusedError):
        try:
            mode = os.stat(unix_path).st_mode
        except OSError:
            return reason
        if not stat.S_ISSOCK(mode):
            return f"{unix_path} is not a socket"
        return f"nobody listens on {unix_path} ({reason})"
    return reason


def _ssl_reason(err: ssl.SSLError) -> str:
    """An OpenSSL error without its library tag and source line:
    `[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4154)` -> the words."""
    text = str(err.args[1]) if len(err.args) > 1 else str(err)
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or str(err)


class _Encrypted(Exception):
    """Raised by the passphrase callback: fleetctl never prompts for a key's passphrase."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def _tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """The client's TLS context; BadTLSFile names the file at fault and why."""
    given = (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file))
    for option, path in given:
        if path:
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as err:
                raise BadTLSFile(option, path, err.strerror or str(err)) from None
    if key_file and not cert_file:
        raise BadTLSFile("key_file", key_file, "a key file given without its certificate file")
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except ssl.SSLError as err:
        reason = f"no CA certificate in PEM form in it ({_ssl_reason(err)})"
        raise BadTLSFile("ca_file", str(ca_file), reason) from None
    if not cert_file:
        return context
    try:  # the certificate alone first, so a bad certificate is not blamed on the key
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except ssl.SSLError as err:
        reason = f"no certificate in PEM form in it ({_ssl_reason(err)})"
        raise BadTLSFile("cert_file", cert_file, reason) from None
    try:
        context.load_cert_chain(cert_file, key_file or None, password=_no_passphrase)
    except _Encrypted:
        option, path = ("key_file", key_file) if key_file else ("cert_file", cert_file)
        raise BadTLSFile(
            option, str(path), "the key is encrypted (no passphrase can be given)"
        ) from None
    except ssl.SSLError as err:
        if not key_file:
            raise BadTLSFile(
                "cert_file", cert_file, "no private key in it, and no key file given"
            ) from None
        if err.reason == "KEY_VALUES_MISMATCH":
            raise BadTLSFile("key_file", key_file, f"not the key of {cert_file}") from None
        reason = f"no private key in PEM form in it ({_ssl_reason(err)})"
        raise BadTLSFile("key_file", key_file, reason) from None
    return context


def _error(status: int, raw: bytes) -> APIError:
    """The APIError of an error answer: fleet's JSON document, else its text or HTTP reason."""
    try:
        err = json.loads(raw)["error"]
        code, message = int(err.get("code") or status), str(err.get("message") or "")
        if err.get("reason") == "machineUnreachable":
            machines = [(str(m["id"]), str(m.get("primaryIP") or "")) for m in err["machines"]]
            return MachineUnreachable(code, message, machines)
        return APIError(code, message)
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        return APIError(status, text or http.client.responses.get(status, "error"))
