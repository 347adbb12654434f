"""`fleetd pki init|issue` (fleetd/pki.py): what each kind of certificate says, the files and
their modes, and bad input refused with one line and nothing written.

The certificates are checked the way their users check them: a TLS handshake over loopback
between a server certificate and a client certificate of the same CA (Python's ssl, as
fleetctl and fleetd's listeners use it), and cryptography's RFC 5280 verifier. That etcd takes
them is shown by tests/ops/test_quickstart_real_hosts.py, which follows docs/quickstart.md.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from fleetd.pki import LOCAL_IP, PkiError, certificate_spec

FLEETD = Path(sys.executable).parent / "fleetd"
SERVER_AND_CLIENT = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def pki(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEETD, "pki", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@pytest.mark.parametrize(
    ("kind", "name", "ips", "sans", "serves"),
    [
        # etcd's server certificate: its name, its addresses, and 127.0.0.1 for local clients
        (
            "etcd-server",
            "host1",
            ["10.0.0.11"],
            ["DNS:host1", "IP:10.0.0.11", "IP:127.0.0.1"],
            True,
        ),
        # 127.0.0.1 given already is not repeated; addresses are normalised and deduplicated
        (
            "etcd-server",
            "host1",
            ["127.0.0.1", "10.0.0.11", " 10.0.0.11"],
            ["DNS:host1", "IP:127.0.0.1", "IP:10.0.0.11"],
            True,
        ),
        # a peer certificate: the member's addresses only
        (
            "etcd-peer",
            "etcd-2.example",
            ["10.0.0.12", "fd00::12"],
            ["DNS:etcd-2.example", "IP:10.0.0.12", "IP:fd00::12"],
            True,
        ),
        # clients are known by their name alone
        ("etcd-client", "host3", [], ["DNS:host3"], False),
        ("fleetctl", "alice-laptop", [], ["DNS:alice-laptop"], False),
        # fleetd's API and peer listener certificate: reached at the host's public_ip
        ("fleetd", "host2", ["10.0.0.12"], ["DNS:host2", "IP:10.0.0.12"], True),
    ],
    ids=["etcd-server", "etcd-server-dedup", "etcd-peer", "etcd-client", "fleetctl", "fleetd"],
)
def test_certificate_spec(
    kind: str, name: str, ips: list[str], sans: list[str], serves: bool
) -> None:
    spec = certificate_spec(kind, name, ips)
    assert spec.sans == sans
    assert spec.serves is serves
    assert spec.stem == kind


@pytest.mark.parametrize(
    ("kind", "name", "ips", "words"),
    [
        ("etcd", "host1", ["10.0.0.11"], "unknown kind 'etcd'"),
        ("etcd-server", "host1", [], "an etcd-server certificate needs --ip"),
        ("fleetd", "host1", [], "a fleetd certificate needs --ip"),
        ("etcd-client", "host1", ["10.0.0.11"], "--ip is for certificates a server presents"),
        ("etcd-peer", "host1", ["10.0.0.256"], "--ip '10.0.0.256' is not an IP address"),
        ("fleetd", "../host1", ["10.0.0.11"], "name '../host1' is not a host name"),
        ("fleetd", "host_1", ["10.0.0.11"], "is not a host name"),
        ("fleetd", "-host1", ["10.0.0.11"], "is not a host name"),
        ("fleetd", "h" * 65, ["10.0.0.11"], "at most 64 characters"),
    ],
    ids=[
        "kind",
        "server-no-ip",
        "fleetd-no-ip",
        "client-with-ip",
        "bad-ip",
        "path",
        "underscore",
        "dash-first",
        "too-long",
    ],
)
def test_certificate_spec_refuses(kind: str, name: str, ips: list[str], words: str) -> None:
    with pytest.raises(PkiError, match=words.replace("(", r"\(").replace(".", r"\.")):
        certificate_spec(kind, name, ips)


def test_init_and_issue_write_what_each_host_needs(tmp_path: Path) -> None:
    assert (
        pki("init", "--dir", "fleet-pki", "--name", "test fleet CA", cwd=tmp_path).returncode == 0
    )
    issued = [
        ("--ip", "127.0.0.11", "etcd-server", "host1"),
        ("--ip", "127.0.0.11", "etcd-peer", "host1"),
        ("etcd-client", "host1"),
        ("--ip", "127.0.0.11", "fleetd", "host1"),
        ("fleetctl", "admin"),
    ]
    for args in issued:
        done = pki("issue", "--dir", "fleet-pki", *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""

    root = tmp_path / "fleet-pki"
    assert _modes(root) == {"ca.pem": 0o644, "ca-key.pem": 0o600, "host1": 0o700, "admin": 0o700}
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert _modes(root / "host1") == {
        "ca.pem": 0o644,
        "etcd-server.pem": 0o644,
        "etcd-server-key.pem": 0o600,
        "etcd-peer.pem": 0o644,
        "etcd-peer-key.pem": 0o600,
        "etcd-client.pem": 0o644,
        "etcd-client-key.pem": 0o600,
        "fleetd.pem": 0o644,
        "fleetd-key.pem": 0o600,
    }
    assert (root / "host1" / "ca.pem").read_bytes() == (root / "ca.pem").read_bytes()

    ca = _cert(root / "ca.pem")
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test fleet CA"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = _cert(root / "host1" / "etcd-server.pem")
    assert _sans(server) == (["host1"], ["127.0.0.11", LOCAL_IP])
    assert _usages(server) == SERVER_AND_CLIENT
    assert _sans(_cert(root / "host1" / "etcd-peer.pem")) == (["host1"], ["127.0.0.11"])
    fleetd = _cert(root / "host1" / "fleetd.pem")
    assert _sans(fleetd) == (["host1"], ["127.0.0.11"])
    assert _usages(fleetd) == SERVER_AND_CLIENT
    client = _cert(root / "host1" / "etcd-client.pem")
    # etcd with auth on takes a client certificate's CN as the user: the name given
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "host1"
    assert _sans(client) == (["host1"], [])
    assert _usages(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _usages(_cert(root / "admin" / "fleetctl.pem")) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (client.not_valid_after_utc - client.not_valid_before_utc).days == 825  # + 5 min
    assert client.not_valid_after_utc < ca.not_valid_after_utc

    policy = PolicyBuilder().store(Store([ca]))
    for address in ("127.0.0.11", LOCAL_IP):
        policy.build_server_verifier(x509.IPAddress(ipaddress.ip_address(address))).verify(
            server, []
        )
    policy.build_server_verifier(x509.DNSName("host1")).verify(server, [])
    policy.build_client_verifier().verify(client, [])
    _handshake(root, root / "host1" / "fleetd", root / "admin" / "fleetctl")


def test_bad_requests_change_nothing(tmp_path: Path) -> None:
    # no CA yet: issue says how to make one, and writes nothing
    done = pki("issue", "--dir", "fleet-pki", "etcd-client", "host1", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "Error: no CA in fleet-pki (No such file or directory: fleet-pki/ca.pem): make one "
        "with `fleetd pki init --dir fleet-pki`"
    ]
    assert list(tmp_path.iterdir()) == []

    assert pki("init", "--dir", "fleet-pki", cwd=tmp_path).returncode == 0
    assert pki("issue", "--dir", "fleet-pki", "etcd-client", "host1", cwd=tmp_path).returncode == 0
    before = _contents(tmp_path)

    refused = [
        # a second CA over the first would orphan every certificate it signed
        (("init", "--dir", "fleet-pki"), "fleet-pki already holds a CA (ca.pem, ca-key.pem)"),
        # a certificate is never overwritten
        (
            ("issue", "--dir", "fleet-pki", "etcd-client", "host1"),
            "fleet-pki/host1/etcd-client.pem and fleet-pki/host1/etcd-client-key.pem already exist",
        ),
        (
            ("issue", "--dir", "fleet-pki", "etcd-server", "host2"),
            "an etcd-server certificate needs --ip",
        ),
        (
            ("issue", "--dir", "fleet-pki", "--ip", "10.0.0.1", "fleetctl", "host2"),
            "--ip is for certificates a server presents",
        ),
        (
            ("issue", "--dir", "fleet-pki", "--ip", "host2", "fleetd", "host2"),
            "--ip 'host2' is not an IP address",
        ),
        (
            ("issue", "--dir", "fleet-pki", "--days", "0", "fleetctl", "host2"),
            "--days must be at least 1",
        ),
        (("init", "--dir", "other", "--days", "0"), "--days must be at least 1"),
    ]
    for args, words in refused:
        done = pki(*args, cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout)
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and words in done.stderr, (args, done.stderr)
        assert _contents(tmp_path) == before, args

    # a CA key that is not the CA certificate's is refused before signing
    (tmp_path / "fleet-pki" / "ca-key.pem").write_bytes(
        (tmp_path / "fleet-pki" / "host1" / "etcd-client-key.pem").read_bytes()
    )
    before = _contents(tmp_path)
    done = pki("issue", "--dir", "fleet-pki", "fleetctl", "admin", cwd=tmp_path)
    assert done.returncode == 1
    assert "fleet-pki/ca-key.pem is not the key of fleet-pki/ca.pem" in done.stderr
    assert _contents(tmp_path) == before

    # click refuses an unknown kind with its usage line
    done = pki("issue", "--dir", "fleet-pki", "etcd", "host1", cwd=tmp_path)
    assert done.returncode == 2 and "'etcd' is not one of" in done.stderr


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def _contents(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sans.get_values_for_type(x509.DNSName), [
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
    ]


def _usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _handshake(root: Path, server: Path, client: Path) -> None:
    """A mutual-TLS handshake on 127.0.0.11 (the fleetd certificate's address, host names
    checked) between `server` and `client` (paths without `.pem`), each trusting the CA."""
    ca = str(root / "ca.pem")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(f"{server}.pem", f"{server}-key.pem")
    client_ctx = ssl.create_default_context(cafile=ca)
    client_ctx.load_cert_chain(f"{client}.pem", f"{client}-key.pem")
    with socket.create_server(("127.0.0.11", 0)) as listener:
        port = listener.getsockname()[1]
        seen: dict[str, object] = {}

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(("127.0.0.11", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="127.0.0.11") as tls:
                assert tls.recv(2) == b"ok"
        thread.join(10)
    subject = dict(item[0] for item in seen["peer"]["subject"])  # type: ignore[index]
    assert subject["commonName"] == client.parent.name
