"""The peer listener (status and journal of local units, for other fleetds) speaks mutual TLS
with the cluster's CA: real TLS handshakes over real sockets, a real etcd, two real APIServers.

A client without a certificate, or with one of another CA, is refused during the handshake and
gets no answer; a fleetd with a certificate of the cluster's CA is served. When forwarding
fails (here: A's certificate is of another CA), the API answers 502 with `reason`
machineUnreachable and the machine's IP, which fleetctl uses to fall back to SSH.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from api_helpers import HELLO, machine, publish

from fleetd.api.client import Client, MachineUnreachable
from fleetd.api.server import APIServer, TLSFiles
from fleetd.model import JobState
from fleetd.registry import Registry
from fleetd.sandbox.pki import make_peer_pki
from fleetd.unit import UnitFile, UnitOption

A, B = "a" * 32, "b" * 32  # B runs the unit and serves its peer listener; A forwards to B
B_IP = "127.0.0.12"
STATUS = "● hello.service - Hello World\n     Active: active (running)\n"


class Inspector:
    """B's systemd, as far as its peer listener asks (the real one is in test_api_systemd)."""

    async def status(self, name: str) -> str:
        return STATUS.replace("hello.service", name)

    async def _lines(self) -> AsyncIterator[str]:
        yield "Dec 01 10:00:00 vm sh[1]: Hello World"

    def journal(self, name: str, *, lines: int | None = None, follow: bool = False):
        return self._lines()


def _tls(directory: Path, name: str) -> TLSFiles:
    return TLSFiles(str(directory / f"{name}.pem"), str(directory / f"{name}-key.pem"),
                    str(directory / "ca.pem"))  # fmt: skip


@pytest.fixture
def pkis(tmp_path: Path) -> tuple[Path, Path]:
    """The cluster's CA (certificates for a and b), and another CA (a certificate for a)."""
    make_peer_pki(tmp_path / "cluster", {"a": "127.0.0.11", "b": B_IP}, ca_name="cluster CA")
    make_peer_pki(tmp_path / "other", {"a": "127.0.0.11"}, ca_name="another CA")
    return tmp_path / "cluster", tmp_path / "other"


@pytest.fixture
async def peer_b(registry: Registry, sock_dir: Path, pkis) -> AsyncIterator[int]:
    """B's fleetd API with its peer listener on B_IP; yields the peer port. hello.service is
    placed on B and active."""
    cluster, _ = pkis
    server = APIServer(registry, B, inspector=Inspector())
    await server.start(sock_dir / "b.sock", peer=(B_IP, 0), peer_tls=_tls(cluster, "b"))
    assert server.peer_address is not None
    leases = [await machine(registry, B, B_IP), await machine(registry, A, "127.0.0.11")]
    unit = UnitFile.from_options(UnitOption(**o) for o in HELLO)
    await registry.create_job("hello.service", unit, JobState.LAUNCHED)
    assert await registry.schedule("hello.service", B)
    await publish(registry, leases[0], "hello.service", B, unit.hash)
    try:
        yield server.peer_address[1]
    finally:
        await server.stop()
        for lease in leases:
            await lease.revoke()


def _get_status(port: int, ctx: ssl.SSLContext) -> tuple[int, str]:
    """GET the peer route over a fresh TLS connection (blocking: run in a thread)."""
    conn = http.client.HTTPSConnection(B_IP, port, timeout=10, context=ctx)
    try:
        conn.request("GET", "/fleet/v1/x/local/units/hello.service/status")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _journal(client: Client) -> bytes:
    return b"".join(client.journal("hello.service"))


def _client_ctx(ca: Path, cert: TLSFiles | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))  # the client does verify B
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


async def test_peer_listener_refuses_clients_without_a_certificate_of_the_cluster_ca(
    peer_b: int, pkis
) -> None:
    cluster, other = pkis
    for cert in (None, _tls(other, "a")):
        # TLS 1.2: the server checks the client's certificate inside the handshake, so the
        # handshake itself fails (asyncio's server closes it; the alert may not be flushed)
        tls12 = _client_ctx(cluster / "ca.pem", cert)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(_get_status, peer_b, tls12)
        # TLS 1.3: the client's handshake ends first; the server's alert (or its closing the
        # connection) comes instead of any answer
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(_get_status, peer_b, _client_ctx(cluster / "ca.pem", cert))

    # plain HTTP gets no answer either (the listener speaks TLS only)
    def plain() -> bytes:
        with socket.create_connection((B_IP, peer_b), timeout=10) as sock:
            sock.sendall(b"GET /fleet/v1/x/local/units/hello.service/status HTTP/1.1\r\n"
                         b"Host: b\r\n\r\n")  # fmt: skip
            return sock.recv(65536)

    assert b"Hello World" not in await asyncio.to_thread(plain)
    # a fleetd's certificate of the cluster's CA is served
    status, text = await asyncio.to_thread(
        _get_status, peer_b, _client_ctx(cluster / "ca.pem", _tls(cluster, "a"))
    )
    assert (status, text) == (200, STATUS)


async def test_forwarding_presents_the_fleetds_certificate(
    registry: Registry, sock_dir: Path, peer_b: int, pkis
) -> None:
    cluster, other = pkis
    for name, pki, served in (("good", cluster, True), ("foreign", other, False)):
        a = APIServer(
            registry, A, peer_url=lambda m, _ip: f"https://{B_IP}:{peer_b}" if m == B else None,
            peer_ssl=_tls(pki, "a").client_context(),
        )  # fmt: skip
        await a.start(sock_dir / f"{name}.sock")
        try:
            client = Client(f"unix://{a.unix_path}", timeout=10)
            if served:
                assert await asyncio.to_thread(client.status, "hello.service") == STATUS
                journal = await asyncio.to_thread(_journal, client)
                assert journal == b"Dec 01 10:00:00 vm sh[1]: Hello World\n"
                continue
            with pytest.raises(MachineUnreachable) as err:
                await asyncio.to_thread(client.status, "hello.service")
            assert err.value.code == 502 and err.value.machines == [(B, B_IP)]
            assert err.value.message.startswith(f"cannot reach machine {B}: https://{B_IP}")
            with pytest.raises(MachineUnreachable) as err:
                await asyncio.to_thread(_journal, client)
            assert err.value.machines == [(B, B_IP)]
        finally:
            await a.stop()


async def test_no_peer_listener_known_answers_502_machine_unreachable(
    registry: Registry, sock_dir: Path, peer_b: int
) -> None:
    """The error body a client falls back on (docs/api.md): reason, machine and its IP."""
    a = APIServer(registry, A)  # forwards to nobody: no peer URL for any machine
    await a.start(sock_dir / "a.sock")
    try:

        def raw() -> tuple[int, dict]:
            conn = http.client.HTTPConnection("x", timeout=10)
            conn.sock = socket.socket(socket.AF_UNIX)
            conn.sock.connect(str(a.unix_path))
            conn.request("GET", "/fleet/v1/x/units/hello.service/status")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())

        status, body = await asyncio.to_thread(raw)
        assert status == 502
        assert body["error"]["reason"] == "machineUnreachable"
        assert (body["error"]["machineID"], body["error"]["machineIP"]) == (B, B_IP)
        assert body["error"]["machines"] == [{"id": B, "primaryIP": B_IP}]
        assert body["error"]["message"].startswith(f"cannot reach machine {B}: its fleetd address")
    finally:
        await a.stop()


async def test_peer_listener_needs_tls(registry: Registry, sock_dir: Path) -> None:
    server = APIServer(registry, B)
    with pytest.raises(ValueError, match="the peer listener needs TLS"):
        await server.start(sock_dir / "b.sock", peer=("127.0.0.1", 0))
    await server.stop()


def test_peer_pki_with_a_long_ca_name(tmp_path: Path) -> None:
    """A sandbox in a deep directory: the CA's name is cut to X.509's 64 characters."""
    make_peer_pki(tmp_path, {"m1": "127.0.0.11"}, ca_name="fleetd sandbox peers CA " + "d" * 80)
    _tls(tmp_path, "m1").client_context()  # the chain loads
    _tls(tmp_path, "m1").server_context()
