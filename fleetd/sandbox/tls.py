"""`fleetd sandbox up --tls`: etcd over TLS with client certificates, and etcd auth on.

What `prepare_tls` writes into `<dir>/pki/` (mode 0700; keys and secrets mode 0600):

    ca.pem                      the sandbox's own CA (its key is not kept)
    server.pem, server-key.pem  etcd's certificate: SANs 127.0.0.1 and localhost
    mN.pem, mN-key.pem          machine mN's fleetd client certificate (CN fleetd-mN)
    sandbox.pem, ...-key.pem    the sandbox command's own client certificate
    fleet.conf                  etcd_username=fleet, etcd_password=...: given to every fleetd as
                                `--config`, so the password is on no command line and in no
                                environment (`ps e` shows environments)
    root.password               etcd's root password (for etcdctl by hand; nothing else uses it)

etcd then serves https only, with `--client-cert-auth`; `secure_etcd` creates `root` and a `fleet`
user whose role may read and write the fleet key prefix only, then turns auth on. The client
certificates' CNs are no etcd user, so a certificate without the password is refused.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from fleetd.config import ConfigError, parse_config_file
from fleetd.errors import PermanentError
from fleetd.registry import EtcdConfig
from fleetd.registry.keys import DEFAULT_PREFIX
from fleetd.sandbox.etcd import EtcdServer, EtcdUser, TLSFiles

__all__ = ["FLEET_USER", "SandboxTLS", "prepare_tls", "secure_etcd"]

log = structlog.get_logger(__name__)

PKI_DIR = "pki"
FLEET_USER = "fleet"
SANDBOX_CLIENT = "sandbox"  # the sandbox command's own client certificate
CERT_DAYS = 30


class SandboxTLSError(PermanentError):
    """The sandbox's TLS files are missing or damaged."""


@dataclass(frozen=True, slots=True)
class SandboxTLS:
    """Where a TLS sandbox keeps its certificates and credentials (all under `pki_dir`)."""

    pki_dir: Path

    @property
    def ca(self) -> Path:
        return self.pki_dir / "ca.pem"

    @property
    def credentials(self) -> Path:
        """fleet.conf with the `fleet` user's etcd username and password, mode 0600."""
        return self.pki_dir / "fleet.conf"

    @property
    def root_password_file(self) -> Path:
        return self.pki_dir / "root.password"

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of the client `name`: a machine (m1...) or `sandbox`."""
        return self.pki_dir / f"{name}.pem", self.pki_dir / f"{name}-key.pem"

    def etcd_files(self) -> TLSFiles:
        """etcd's server side: its certificate, and the CA its clients' certificates need."""
        return TLSFiles(
            self.ca,
            self.pki_dir / "server.pem",
            self.pki_dir / "server-key.pem",
            client_cert_auth=True,
        )

    def fleetd_flags(self, machine: str) -> list[str]:
        """The TLS and credentials flags of machine `machine`'s fleetd (no secret in them)."""
        cert, key = self.client(machine)
        return [
            f"--config={self.credentials}",
            f"--etcd-cafile={self.ca}",
            f"--etcd-certfile={cert}",
            f"--etcd-keyfile={key}",
        ]

    def etcd_config(self, endpoint: str, request_timeout: float) -> EtcdConfig:
        """How the sandbox command itself reaches its etcd: TLS and the `fleet` user."""
        username, password = self.read_credentials()
        cert, key = self.client(SANDBOX_CLIENT)
        return EtcdConfig(
            endpoints=[endpoint],
            ca_file=self.ca,
            cert_file=cert,
            key_file=key,
            username=username,
            password=password,
            request_timeout=request_timeout,
        )

    def read_credentials(self) -> tuple[str, str]:
        try:
            values = parse_config_file(self.credentials.read_text(), str(self.credentials))
        except (OSError, ConfigError) as err:
            raise SandboxTLSError(
                f"cannot read the sandbox's etcd credentials ({err}); "
                f"run `fleetd sandbox down` and `fleetd sandbox up --tls` again"
            ) from None
        username, password = values.get("etcd_username"), values.get("etcd_password")
        if not username or not password:
            raise SandboxTLSError(
                f"{self.credentials} lacks etcd_username or etcd_password; "
                f"run `fleetd sandbox down` and `fleetd sandbox up --tls` again"
            )
        return username, password


def prepare_tls(directory: Path, machines: Sequence[str]) -> SandboxTLS:
    """Make the CA, etcd's and every client's certificate, and the two etcd passwords."""
    from fleetd.sandbox.pki import make_pki  # cryptography: only a TLS sandbox loads it

    tls = SandboxTLS(directory / PKI_DIR)
    make_pki(
        tls.pki_dir,
        ca_name=f"fleetd sandbox CA ({directory})",
        clients=[*machines, SANDBOX_CLIENT],
        days=CERT_DAYS,
    )
    _write_secret(
        tls.credentials,
        "# etcd credentials of this sandbox's fleetds (fleetd sandbox up --tls); keep private\n"
        f"etcd_username={FLEET_USER}\netcd_password={_password()}\n",
    )
    _write_secret(tls.root_password_file, _password() + "\n")
    log.info("sandbox.tls_prepared", pki=str(tls.pki_dir), clients=[*machines, SANDBOX_CLIENT])
    return tls


def secure_etcd(server: EtcdServer, tls: SandboxTLS) -> None:
    """Create etcd's `root` and `fleet` users (fleet: readwrite on the key prefix only), then
    turn auth on."""
    username, password = tls.read_credentials()
    root_password = tls.root_password_file.read_text().strip()
    server.enable_auth(root_password, [EtcdUser(username, password, DEFAULT_PREFIX)])


def _password() -> str:
    return secrets.token_urlsafe(24)  # no white space: etcdctl reads it up to the first


def _write_secret(path: Path, text: str) -> None:
    """Write `text` to a new file created mode 0600."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
