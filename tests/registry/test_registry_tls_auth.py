"""TLS with client certificates and etcd user/password auth, with certificates made here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from registry_helpers import unit

from fleetd.errors import PermanentError
from fleetd.model import JobState
from fleetd.registry import (
    EtcdAuthError,
    EtcdConfig,
    EtcdTLSError,
    EtcdUnavailable,
    Registry,
    Submitted,
)
from fleetd.sandbox.etcd import EtcdServer, EtcdUser, TLSFiles
from fleetd.sandbox.pki import Pki, make_pki

PREFIX = "/fleet/"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[EtcdServer]:
    """etcd over TLS (client certificates required) with auth on: root, and a `fleet` user
    whose role may read and write the fleet prefix only."""
    tls = TLSFiles(pki.ca, pki.server_cert, pki.server_key, client_cert_auth=True)
    server = EtcdServer(tmp_path_factory.mktemp("etcd-tls") / "data", tls=tls).start()
    try:
        server.enable_auth("rootpw", [EtcdUser("fleet", "s3cret", PREFIX)])
        yield server
    finally:
        server.stop()


def config(server: EtcdServer, pki: Pki, **overrides) -> EtcdConfig:
    base = dict(
        endpoints=server.endpoints,
        ca_file=pki.ca,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
        username="fleet",
        password="s3cret",
        request_timeout=3.0,
        key_prefix=PREFIX,
    )
    return EtcdConfig(**{**base, **overrides})


async def test_registry_works_over_tls_with_auth(secure_etcd: EtcdServer, pki: Pki) -> None:
    async with Registry(config(secure_etcd, pki)) as reg:
        assert await reg.create_job("hello.service", unit()) is Submitted.CREATED
        snap = await reg.snapshot()
        async with reg.watch(snap.revision + 1) as events:
            await reg.set_desired("hello.service", JobState.LAUNCHED)
            event = await events.__anext__()
        assert event.doc.desired is JobState.LAUNCHED
        lease = await reg.grant_lease(30)
        await lease.revoke()
    assert "hello.service" in secure_etcd.etcdctl("get", "--prefix", PREFIX, user="root:rootpw")


async def test_wrong_ca_is_refused_clearly(secure_etcd: EtcdServer, pki: Pki, tmp_path) -> None:
    other = make_pki(tmp_path / "other", ca_name="not etcd's CA")
    with pytest.raises(EtcdTLSError, match=r"TLS handshake with etcd at 127\.0\.0\.1:\d+") as exc:
        await Registry(config(secure_etcd, pki, ca_file=other.ca)).connect()
    assert isinstance(exc.value, PermanentError)
    assert "CA" in str(exc.value)


async def test_wrong_password_is_refused(secure_etcd: EtcdServer, pki: Pki) -> None:
    with pytest.raises(EtcdAuthError, match="refused user 'fleet'"):
        await Registry(config(secure_etcd, pki, password="wrong")).connect()


async def test_permission_outside_the_prefix_is_refused(secure_etcd: EtcdServer, pki: Pki) -> None:
    with pytest.raises(EtcdAuthError, match="permission"):
        async with Registry(config(secure_etcd, pki, key_prefix="/elsewhere/")) as reg:
            await reg.create_job("hello.service", unit())


async def test_unreachable_etcd_names_the_endpoints(private_etcd: EtcdServer) -> None:
    endpoint = private_etcd.endpoint
    private_etcd.stop()
    with pytest.raises(EtcdUnavailable, match=f"etcd unavailable at {endpoint}"):
        await Registry(EtcdConfig([endpoint], request_timeout=1.0)).connect()
