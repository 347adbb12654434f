"""`fleetd pki`: the certificate authority and the certificates of a cluster on real hosts.

    fleetd pki init  --dir DIR [--days 3650] [--name "fleet CA"]
    fleetd pki issue --dir DIR [--days 825] [--ip IP]... KIND NAME

`init` makes the cluster's CA: `DIR/ca.pem` and its key `DIR/ca-key.pem` (0600; it signs every
certificate later: keep the directory on an admin machine, never on the hosts). `issue` signs
one certificate of a KIND for NAME (a host name: the certificate's CN and DNS name) into
`DIR/NAME/`, beside a copy of `ca.pem`, so `DIR/NAME/` is everything host NAME needs:

- `etcd-server`: etcd's client-facing certificate (`--cert-file`, `--key-file`); SANs NAME,
  each `--ip` and 127.0.0.1; server and client usage (etcd's gateway dials etcd with it).
- `etcd-peer`: etcd's member-to-member certificate (`--peer-cert-file`, ...); SANs NAME and
  each `--ip`; server and client usage.
- `etcd-client`: a client of etcd, fleetd's `etcd_certfile`/`etcd_keyfile` or etcdctl's
  `--cert`/`--key`; SAN NAME; client usage.
- `fleetd`: fleetd's `api_tls_cert`/`api_tls_key`, for its TCP API and its peer listener (it
  also presents it when it forwards to another machine's); SANs NAME and each `--ip`; server
  and client usage.
- `fleetctl`: `fleetctl --cert-file/--key-file` against fleetd's TCP API; SAN NAME; client.

Files: `DIR/NAME/<KIND>.pem` and `DIR/NAME/<KIND>-key.pem`.
Keys are ECDSA P-256, written mode 0600 from the start; directories are mode 0700. etcd with
`--client-cert-auth` trusts every certificate of the CA: the CA is the cluster's, for etcd and
fleetd alike, and nothing else. Bad input is refused before anything is written; an existing
certificate is never overwritten (remove its two files to issue it again).

The decisions (names, addresses, SANs, usages, file names) are `certificate_spec`, pure and
table-tested; the certificates themselves are made by `fleetd/sandbox/pki.py`'s machinery,
imported only when a command runs (it needs `cryptography`), as is the loading of the CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fleetd.errors import PermanentError

__all__ = ["KINDS", "CertificateSpec", "PkiError", "certificate_spec", "init_ca", "issue", "pki"]

CA_DAYS = 3650
LEAF_DAYS = 825
LOCAL_IP = "127.0.0.1"  # etcd's own health check and a local etcdctl reach it there


class PkiError(PermanentError):
    """A `fleetd pki` request that cannot be done; nothing was written."""


@dataclass(frozen=True, slots=True)
class Kind:
    serves: bool  # server and client usage, else client only
    needs_ip: bool  # its SANs need the host's addresses (a server is dialled at one)
    local: bool = False  # 127.0.0.1 among its SANs
    purpose: str = ""


KINDS: dict[str, Kind] = {
    "etcd-server": Kind(True, True, local=True, purpose="etcd's client-facing certificate"),
    "etcd-peer": Kind(True, True, purpose="etcd's member-to-member certificate"),
    "etcd-client": Kind(False, False, purpose="a client of etcd: fleetd, etcdctl"),
    "fleetd": Kind(True, True, purpose="fleetd's TCP API and peer listener (api_tls_cert)"),
    "fleetctl": Kind(False, False, purpose="fleetctl against fleetd's TCP API"),
}

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAME_MAX = 64  # X.509's limit of a CN, which the name is


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    """One certificate to issue: its kind, CN (= its DNS name), IP SANs and files."""

    kind: str
    name: str
    ips: tuple[str, ...]
    serves: bool

    @property
    def stem(self) -> str:
        """Base of its files in the host's directory: `<stem>.pem`, `<stem>-key.pem`."""
        return self.kind

    @property
    def sans(self) -> list[str]:
        """The subject alternative names, as openssl prints them."""
        return [f"DNS:{self.name}", *(f"IP:{ip}" for ip in self.ips)]


def certificate_spec(kind: str, name: str, ips: Sequence[str]) -> CertificateSpec:
    """What `fleetd pki issue KIND NAME --ip ...` makes; PkiError says what is wrong."""
    found = KINDS.get(kind)
    if found is None:
        raise PkiError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if len(name) > _NAME_MAX or not _NAME.fullmatch(name):
        raise PkiError(
            f"name {name!r} is not a host name (letters, digits, '-' and '.', at most "
            f"{_NAME_MAX} characters): it becomes the certificate's CN, DNS name and directory"
        )
    addresses: list[str] = []
    for text in ips:
        try:
            address = str(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise PkiError(f"--ip {text!r} is not an IP address") from None
        if address not in addresses:
            addresses.append(address)
    if addresses and not found.needs_ip:
        raise PkiError(
            f"--ip is for certificates a server presents; {_a(kind)} certificate only identifies "
            f"a client (by its name {name!r})"
        )
    if found.needs_ip and not addresses:
        raise PkiError(
            f"{_a(kind)} certificate needs --ip: the address {name} is reached at "
            f"(repeat --ip for several)"
        )
    if found.local and LOCAL_IP not in addresses:
        addresses.append(LOCAL_IP)
    return CertificateSpec(kind, name, tuple(addresses), found.serves)


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


# ---- writing -----------------------------------------------------------------------------


def init_ca(directory: Path, name: str, days: int) -> Path:
    """Make the CA in `directory`: ca.pem and ca-key.pem. Refuses a directory that has one."""
    _check_days(days)
    if not name.strip():
        raise PkiError("--name of the CA is empty")
    existing = [p.name for p in (directory / "ca.pem", directory / "ca-key.pem") if p.exists()]
    if existing:
        raise PkiError(
            f"{directory} already holds a CA ({', '.join(existing)}): issue certificates with "
            f"`fleetd pki issue --dir {directory} ...`, or choose another directory"
        )
    machinery = _machinery()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(machinery.DIR_MODE)
    key, cert = machinery._ca(name, dt.timedelta(days=days))
    cert_path, _ = machinery._write_pair(directory, "ca", key, cert)
    return cert_path


def issue(directory: Path, spec: CertificateSpec, days: int) -> tuple[Path, Path, dt.datetime]:
    """Sign `spec` with the CA of `directory` into `directory/<name>/`: the certificate, its
    key, and until when it is valid (never past the CA)."""
    _check_days(days)
    host_dir = directory / spec.name
    cert_path, key_path = host_dir / f"{spec.stem}.pem", host_dir / f"{spec.stem}-key.pem"
    existing = [str(p) for p in (cert_path, key_path) if p.exists()]
    if existing:
        raise PkiError(
            f"{' and '.join(existing)} already exist: remove them to issue the {spec.kind} "
            f"certificate of {spec.name} again"
        )
    machinery = _machinery()
    ca_key, ca, ca_pem = _load_ca(directory)
    now = dt.datetime.now(dt.UTC)
    if ca.not_valid_after_utc <= now:
        raise PkiError(f"the CA of {directory} expired on {ca.not_valid_after_utc:%Y-%m-%d}")
    validity = min(dt.timedelta(days=days), ca.not_valid_after_utc - now)
    key, cert = machinery._leaf(ca_key, ca, spec.name, validity, server=spec.serves, ips=spec.ips)
    host_dir.mkdir(exist_ok=True)
    host_dir.chmod(machinery.DIR_MODE)
    machinery._write(host_dir / "ca.pem", ca_pem, machinery.CERT_MODE)
    written = machinery._write_pair(host_dir, spec.stem, key, cert)
    return written[0], written[1], cert.not_valid_after_utc


def _check_days(days: int) -> None:
    if days < 1:
        raise PkiError(f"--days must be at least 1, got {days}")


def _machinery() -> Any:
    """fleetd/sandbox/pki.py, which makes keys and certificates (it needs `cryptography`)."""
    try:
        from fleetd.sandbox import pki
    except ImportError as err:
        raise PkiError(
            f"fleetd pki needs the 'tls' extra (pip install 'fleetd[tls]'): {err}"
        ) from None
    return pki


def _load_ca(directory: Path) -> tuple[Any, Any, bytes]:
    """The CA's key, certificate and PEM text, checked to belong together."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    try:
        ca_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as err:
        raise PkiError(
            f"no CA in {directory} ({err.strerror}: {err.filename}): make one with "
            f"`fleetd pki init --dir {directory}`"
        ) from None
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        raise PkiError(f"{cert_path} holds no certificate in PEM form") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{key_path} holds no unencrypted private key in PEM form") from None
    if key.public_key() != ca.public_key():
        raise PkiError(f"{key_path} is not the key of {cert_path}")
    return key, ca, ca_pem


# ---- the commands --------------------------------------------------------------------------

_dir = click.option(
    "--dir",
    "directory",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="the CA's directory (made mode 0700); each host's certificates go to DIR/NAME/",
)


@click.group()
def pki() -> None:
    """A CA and the certificates of a cluster: etcd's (server, peer), and fleetd's (etcd
    client, TCP API and peer listener). Keys are written mode 0600."""


@pki.command()
@_dir
@click.option("--name", default="fleet CA", show_default=True, help="the CA's common name")
@click.option("--days", default=CA_DAYS, show_default=True, help="how long the CA is valid")
def init(directory: Path, name: str, days: int) -> None:
    """Make the cluster's CA: DIR/ca.pem and DIR/ca-key.pem (keep DIR off the hosts)."""
    try:
        path = init_ca(directory, name, days)
    except PkiError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{path}\tCA {name!r}, valid {days} days")
    click.echo(f"{directory / 'ca-key.pem'}\tits key (mode 0600): signs every certificate")


@pki.command(name="issue")
@_dir
@click.option(
    "--ip",
    "ips",
    multiple=True,
    metavar="IP",
    help="an address clients reach the host at (repeat for several); needed by etcd-server, "
    "etcd-peer and fleetd certificates",
)
@click.option("--days", default=LEAF_DAYS, show_default=True, help="how long it is valid")
@click.argument("kind", metavar="KIND", type=click.Choice(list(KINDS)))
@click.argument("name", metavar="NAME")
def issue_command(directory: Path, ips: tuple[str, ...], days: int, kind: str, name: str) -> None:
    """Sign a KIND certificate for host NAME into DIR/NAME/ (with a copy of ca.pem).

    \b
    KIND: etcd-server  etcd's client-facing certificate (SANs NAME, --ip, 127.0.0.1)
          etcd-peer    etcd's member-to-member certificate (SANs NAME, --ip)
          etcd-client  a client of etcd: fleetd's etcd_certfile, etcdctl
          fleetd       fleetd's api_tls_cert: its TCP API and peer listener (SANs NAME, --ip)
          fleetctl     fleetctl's --cert-file against a TCP API
    """
    try:
        spec = certificate_spec(kind, name, ips)
        cert, key, until = issue(directory, spec, days)
    except PkiError as err:
        raise click.ClickException(str(err)) from None
    usage = "server and client" if spec.serves else "client"
    click.echo(f"{cert}\t{kind} of {name}: {', '.join(spec.sans)}; {usage}; until {until:%Y-%m-%d}")
    click.echo(f"{key}\tits key (mode 0600)")
