"""A throw-away certificate authority for a TLS etcd: one CA, a server and client certificates.

The sandbox (`fleetd sandbox up --tls`) and the tests use it. Every key is an ECDSA P-256 key;
every certificate is signed by the CA and valid from five minutes ago for `days` days.

- the server certificate has the SANs `localhost` and `127.0.0.1` (the sandbox binds only that)
  and may serve and also act as a client (etcd's own `/health` check and `etcdctl` use it);
- each client certificate is named `fleetd-<name>` (CN and DNS SAN): etcd with
  `--client-cert-auth` and auth on takes a certificate's CN as the user when a request carries
  no password, so these CNs are never etcd users and a certificate alone grants nothing.

Files: `ca.pem`, `server.pem`, `server-key.pem`, `<name>.pem`, `<name>-key.pem` in `directory`
(made mode 0700); keys are written mode 0600 from the start (never world-readable, not even for
a moment); the CA's key is not written: nothing signs more certificates later.

`make_peer_pki` makes the sandbox's peer-listener CA and one certificate per machine (every
sandbox, TLS or not: fleetds forward status/journal to each other over mutual TLS). With
`keep_ca_key` it keeps that CA's key too (`ca-key.pem`, 0600), so `add_peer` can sign the
certificate of a machine added later (`fleetd sandbox add`).

`cryptography` is imported here and only here; only `fleetd sandbox` and the tests import this
module, so the `fleetd` daemon and `fleetctl` never load it. It is an optional dependency, the
`tls` extra (`pip install 'fleetd[tls]'`): `Sandbox.up` says so before it starts anything.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ModuleNotFoundError as err:  # an optional dependency: the 'tls' extra
    if err.name != "cryptography":
        raise
    raise ModuleNotFoundError(
        f"{__name__} needs the 'tls' extra (cryptography): pip install 'fleetd[tls]'",
        name=err.name,
    ) from None

__all__ = ["Pki", "add_peer", "make_peer_pki", "make_pki"]

log = structlog.get_logger(__name__)

KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700


@dataclass(frozen=True)
class Pki:
    """Paths of the files `make_pki` wrote. `client_cert`/`client_key` are the first client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @property
    def client_cert(self) -> Path:
        return next(iter(self.clients.values()))[0]

    @property
    def client_key(self) -> Path:
        return next(iter(self.clients.values()))[1]

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of the client `name`."""
        return self.clients[name]


def make_pki(
    directory: Path,
    ca_name: str = "fleetd test CA",
    clients: Sequence[str] = ("client",),
    days: int = 1,
) -> Pki:
    """Make a CA, a server certificate and one client certificate per name in `directory`."""
    if not clients:
        raise ValueError("make_pki needs at least one client name")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(DIR_MODE)
    validity = dt.timedelta(days=days)
    ca_key, ca = _ca(ca_name, validity)
    ca_path = _write(directory / "ca.pem", _pem(ca), CERT_MODE)
    server_key, server = _leaf(ca_key, ca, "fleetd-etcd-server", validity, server=True)
    server_paths = _write_pair(directory, "server", server_key, server)
    client_paths = {}
    for name in clients:
        key, cert = _leaf(ca_key, ca, f"fleetd-{name}", validity, server=False)
        client_paths[name] = _write_pair(directory, name, key, cert)
    log.info("pki.made", dir=str(directory), ca=ca_name, clients=list(clients), days=days)
    return Pki(ca_path, *server_paths, clients=client_paths)


def make_peer_pki(
    directory: Path,
    peers: Mapping[str, str],
    ca_name: str = "fleetd peers CA",
    days: int = 1,
    keep_ca_key: bool = False,
) -> dict[str, tuple[Path, Path]]:
    """A CA (`ca.pem`) and, for each peer `name: ip`, `<name>.pem`/`<name>-key.pem`: a
    certificate that may both serve (the peer listener, SAN the IP) and act as a client (a
    fleetd forwarding to another machine), as the api_tls_* files of fleetd's peer listener.
    `keep_ca_key`: the CA's key as well (`ca-key.pem`), for `add_peer`."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(DIR_MODE)
    validity = dt.timedelta(days=days)
    ca_key, ca = _ca(ca_name, validity)
    _write(directory / "ca.pem", _pem(ca), CERT_MODE)
    if keep_ca_key:
        _write(directory / "ca-key.pem", _key_pem(ca_key), KEY_MODE)
    paths = {}
    for name, ip in peers.items():
        key, cert = _leaf(ca_key, ca, f"fleetd-{name}", validity, server=True, ips=(ip,))
        paths[name] = _write_pair(directory, name, key, cert)
    log.info("pki.peers_made", dir=str(directory), peers=dict(peers), days=days)
    return paths


def add_peer(directory: Path, name: str, ip: str, days: int = 1) -> tuple[Path, Path]:
    """One more peer's certificate and key (as `make_peer_pki`'s), signed by the CA that
    `make_peer_pki(keep_ca_key=True)` left in `directory`."""
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / 'ca-key.pem'} is not the peer CA's key")
    validity = dt.timedelta(days=days)
    key, cert = _leaf(ca_key, ca, f"fleetd-{name}", validity, server=True, ips=(ip,))
    paths = _write_pair(directory, name, key, cert)
    log.info("pki.peer_added", dir=str(directory), peer=name, ip=ip, days=days)
    return paths


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])])  # X.509's CN limit


def _ca(cn: str, validity: dt.timedelta) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    cn: str,
    validity: dt.timedelta,
    *,
    server: bool,
    ips: Sequence[str] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(cn)]  # RFC 5280 verifiers want a SAN
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if ips:
        names = [x509.DNSName(cn), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_pair(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Path, Path]:
    return (
        _write(directory / f"{name}.pem", _pem(cert), CERT_MODE),
        _write(directory / f"{name}-key.pem", _key_pem(key), KEY_MODE),
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> Path:
    """Write `data` to a new file created with `mode` (an old file is replaced, not reused)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)  # the umask may have narrowed the certificate's mode
    return path
