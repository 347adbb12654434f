"""The fleet API v1 client fleetctl uses: standard library only (http.client), so fleetctl starts
fast. Speaks to a unix socket (`unix:///var/run/fleet.sock`), or TCP (`http://host:port`,
`https://host:port` with a CA and a client certificate).

Every call opens one connection (fleetctl makes few calls; no pool to keep right).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_ENDPOINT", "APIError", "BadEndpoint", "Client", "MachineUnreachable", "Unreachable",
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


class MachineUnreachable(APIError):
    """The API could not reach the unit's machine (a 502 whose `reason` is
    `machineUnreachable`): `machines` are the (ID, public IP) of every machine the request
    concerned, for the caller to go there itself (fleetctl runs the command over SSH)."""

    def __init__(self, code: int, message: str, machines: list[tuple[str, str]]) -> None:
        super().__init__(code, message)
        self.machines = machines


class BadEndpoint(APIError, ValueError):
    """An endpoint string that names no API (fleet's messages); code 0."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("domain-sock", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _TunnelledHTTPS(http.client.HTTPSConnection):
    """HTTPS to `host` over a unix socket that leads there (the TLS name is still `host`)."""

    def __init__(
        self, path: str, host: str, port: int | None, timeout: float | None, ctx: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._path = path
        self._ctx = ctx

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
            self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _parse_endpoint(endpoint: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, unix path) of the first endpoint of a comma list."""
    first = endpoint.split(",")[0].strip()
    parts = urlsplit(first)
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
        if self._scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                self._ssl.load_cert_chain(cert_file, key_file)

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
    ) -> Iterator[dict]:
        """Each unit's line as it reaches `state`, then `{"done": true, "pending": [...]}`."""
        body = {"units": list(units), "state": state, "active": active, "timeout": timeout}
        yield from self._json_lines("POST", "/x/wait", body=body, endless=False)

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
