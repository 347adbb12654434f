"""The fleet API v1 client fleetctl uses: standard library only (http.client), so fleetctl starts
fast. Speaks to a unix socket (`unix:///var/run/fleet.sock`), or TCP (`http://host:port`,
`https://host:port` with a CA and a client certificate).

Every call opens one connection (fleetctl makes few calls; no pool to keep right).
"""

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
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_ENDPOINT",
    "APIError",
    "BadEndpoint",
    "BadTLSFile",
    "CannotConnect",
    "Client",
    "MachineUnreachable",
    "Unreachable",
]

DEFAULT_ENDPOINT = "unix:///var/run/fleet.sock"
PREFIX = "/fleet/v1"
_STATUS_TIMEOUT = 60.0  # status may be forwarded to another machine


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
    if parts.scheme == "unix":
        if parts.netloc:
            raise BadEndpoint(
                0, f'unable to connect to host "{parts.netloc}" with scheme "unix"'
            )
        if not parts.path:
            raise BadEndpoint(0, f"no socket path in endpoint {first!r}")
        return "unix", "", None, parts.path
    if parts.scheme not in ("http", "https"):
        raise BadEndpoint(
            0, f'unable to connect to host "{parts.netloc}" with scheme "{parts.scheme}"'
        )
    if not parts.hostname:
        raise BadEndpoint(0, f"no host in endpoint {first!r}")
    try:
        port = parts.port
    except ValueError as err:
        raise BadEndpoint(0, f"invalid port in endpoint {first!r}: {err}") from None
    return parts.scheme, parts.hostname, port, ""


class Client:
    """fleet's API v1, synchronously, as fleetctl needs it."""

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

    # --- transport -------------------------------------------------------------------------
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
            why = _connect_failure(
                err, self._path, self.timeout if conn.timeout is None else conn.timeout
            )
            if isinstance(err, PermissionError):
                raise Unreachable(
                    0, f"unable to reach the fleet API at {self.endpoint}: {why}"
                ) from err
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

    # --- fleet API v1 ----------------------------------------------------------------------
    def units(self) -> list[dict]:
        return self._all_pages("/units", "units", {})

    def unit(self, name: str) -> dict | None:
        try:
            return self._call("GET", f"/units/{_q(name)}")[1]
        except APIError as err:
            if err.code == 404 and not isinstance(err, Unreachable):
                return None
            raise

    def put_unit(
        self,
        name: str,
        *,
        options: list[dict] | None = None,
        desired_state: str | None = None,
    ) -> int:
        body: dict[str, Any] = {"name": name}
        if options is not None:
            body["options"] = options
        if desired_state is not None:
            body["desiredState"] = desired_state
        return self._call("PUT", f"/units/{_q(name)}", body=body)[0]

    def destroy_unit(self, name: str) -> bool:
        try:
            self._call("DELETE", f"/units/{_q(name)}")
        except APIError as err:
            if err.code == 404 and not isinstance(err, Unreachable):
                return False
            raise
        return True

    def batch(self, requests: list[dict[str, Any]]) -> list[APIError | None]:
        """Many unit requests in one (fleetd's `POST x/units`, at most 1,000): each a PUT
        (`{"method": "PUT", "name": ..., "body": {...}}`) or a DELETE (`{"method": "DELETE",
        "name": ...}`). Returns, in order, None for each that succeeded, else its APIError.
        A server without the extension answers 404 (APIError) for the whole batch."""
        _, body = self._call("POST", "/x/units", body={"requests": requests})
        out: list[APIError | None] = []
        for answer in (body or {}).get("responses") or []:
            error = answer.get("error")
            out.append(None if error is None else APIError(error["code"], error.get("message", "")))
        if len(out) != len(requests):
            raise APIError(0, f"the batch of {len(requests)} got {len(out)} answers")
        return out

    def states(
        self, *, unit_name: str | None = None, machine_id: str | None = None
    ) -> list[dict]:
        query = {}
        if unit_name:
            query["unitName"] = unit_name
        if machine_id:
            query["machineID"] = machine_id
        return self._all_pages("/state", "states", query)

    def machines(self) -> list[dict]:
        return self._all_pages("/machines", "machines", {})

    # --- fleetd extensions -----------------------------------------------------------------
    def wait(
        self,
        units: list[str],
        state: str,
        *,
        active: bool = False,
        timeout: float | None = None,
        settle: float = 0.0,
    ) -> Iterator[dict]:
        """Each unit's line as it reaches `state` (or, with `"failed": true`, can no longer
        reach it), then `{"done": true, "pending": [...]}`."""
        body: dict[str, Any] = {
            "units": list(units), "state": state, "active": active, "timeout": timeout
        }
        if settle:
            body["settle"] = settle
        yield from self._json_lines("POST", "/x/wait", body=body, endless=False)

    def restart(
        self, name: str, machine_id: str, *, wait: bool = False, timeout: float | None = None
    ) -> dict:
        """Restart `name` on one machine (`POST x/units/{name}/restart`). Without `wait`, the
        answer `{"token"}` once the request is stored; with it, the last line of the stream:
        `{"done", "restarted", "reason"?, "machineID", "machineIP", "systemd*State"...}`."""
        body = {"machineID": machine_id, "wait": wait, "timeout": timeout}
        path = f"/x/units/{_q(name)}/restart"
        if not wait:
            return self._call("POST", path, body=body)[1] or {}
        for line in self._json_lines("POST", path, body=body, endless=False):
            if line.get("done"):
                return line
        raise Unreachable(0, f"lost the fleet API at {self.endpoint}: the restart stream ended")

    def events(self) -> Iterator[dict]:
        """The registry's changes (`GET /x/events`): a `snapshot` line, then `units` and
        `machines` lines as they happen, until the server goes away (then `Unreachable`)."""
        yield from self._json_lines("GET", "/x/events", endless=True)

    def _json_lines(
        self, method: str, path: str, *, endless: bool, body: Any = None
    ) -> Iterator[dict]:
        """The JSON lines of a streamed answer; its end is Unreachable when the stream should
        never end (`endless`), else the end of the iteration."""
        conn, resp = self._open(method, path, body=body, stream=True)
        try:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as err:
                    raise Unreachable(0, f"lost the fleet API at {self.endpoint}: {err}") from err
                if not line:
                    if endless:
                        raise Unreachable(0, f"lost the fleet API at {self.endpoint}: stream ended")
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()

    def status(self, name: str) -> str:
        _, text = self._call(
            "GET", f"/x/units/{_q(name)}/status", timeout=max(self.timeout, _STATUS_TIMEOUT)
        )
        if text is None:  # an empty body
            return ""
        return text if isinstance(text, str) else json.dumps(text)

    def journal(
        self, name: str, *, lines: int = 10, follow: bool = False, machine_id: str | None = None
    ) -> Iterator[bytes]:
        """The unit's journal, chunk by chunk as the server sends it (forever with follow).

        `machine_id` names the machine whose journal to read; a global unit needs one.
        """
        query = {"lines": str(lines), "follow": "true" if follow else "false"}
        if machine_id:
            query["machineID"] = machine_id
        conn, resp = self._open(
            "GET", f"/x/units/{_q(name)}/journal", query=query,
            timeout=max(self.timeout, _STATUS_TIMEOUT), stream=True,
        )  # fmt: skip
        try:
            while True:
                try:
                    chunk = resp.read1(65536)
                except (OSError, http.client.HTTPException) as err:
                    raise Unreachable(0, f"lost the fleet API at {self.endpoint}: {err}") from err
                if not chunk:
                    return
                yield chunk
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


def _q(name: str) -> str:
    return quote(name, safe="@:")


def _error(status: int, raw: bytes) -> APIError:
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
