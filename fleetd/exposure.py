"""The warning at start when fleetd's etcd can be written by anyone who reaches it.

Whoever can write under fleetd's etcd prefix can submit a unit, and every agent runs its units
as root: an etcd that takes writes from anyone who reaches its port (2379) is root on every
machine of the cluster. fleetd cannot see how etcd is set up, but it knows how it connects:

- without `etcd_cafile` fleetd speaks plain gRPC to etcd, whatever the endpoint's scheme says
  (the scheme is not read: `https://` without a CA is plain too, `http://` with one is TLS), so
  its traffic, an etcd password included, crosses the network in clear;
- with neither a client certificate (`etcd_certfile`) nor an etcd user (`etcd_username`),
  fleetd is let in with no credential at all, so etcd takes anyone's writes (an etcd that
  required a certificate or a user would have refused fleetd at start).

Both matter only for endpoints off this host: loopback addresses (127.0.0.0/8, ::1) and the
name `localhost` stay quiet. Names are not resolved (the decision is pure): any other name
counts as off the host.

`etcd_exposure` decides (pure, table-tested in tests/unit/test_exposure.py);
`warn_if_etcd_insecure` logs the decision as one warning, `fleetd.etcd_insecure`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from fleetd.config import Config

__all__ = ["EtcdExposure", "endpoint_host", "etcd_exposure", "is_loopback", "warn_if_etcd_insecure"]

log = structlog.get_logger(__name__)

RISK = "anyone who reaches these endpoints can write a unit that runs as root on every machine"
FIX = (
    "run etcd with TLS and client certificates, and give fleetd etcd_cafile, etcd_certfile and "
    "etcd_keyfile (`fleetd pki` makes them; docs/quickstart.md, 'On real hosts')"
)
PLAINTEXT = "no etcd_cafile: fleetd talks to etcd in plain text"
UNAUTHENTICATED = "no client certificate and no etcd user: etcd lets in clients without either"


@dataclass(frozen=True, slots=True)
class EtcdExposure:
    """What is wrong with how fleetd reaches the etcd endpoints off this host."""

    endpoints: tuple[str, ...]  # as configured, in order: only those off this host
    plaintext: bool
    unauthenticated: bool

    @property
    def problems(self) -> list[str]:
        found = ((self.plaintext, PLAINTEXT), (self.unauthenticated, UNAUTHENTICATED))
        return [words for wrong, words in found if wrong]


def endpoint_host(endpoint: str) -> str:
    """The host of an etcd endpoint: `https://10.0.0.1:2379/` → `10.0.0.1`, `[::1]:2379` → `::1`."""
    rest = endpoint.strip().split("://", 1)[-1].rstrip("/")
    if rest.startswith("["):
        return rest[1:].partition("]")[0]
    host, sep, _ = rest.rpartition(":")
    return host if sep else rest


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine without resolving it: a loopback address or `localhost`."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def etcd_exposure(
    endpoints: Sequence[str], *, ca_file: bool, client_cert: bool, username: bool
) -> EtcdExposure | None:
    """How the endpoints off this host are exposed, or None when fleetd reaches them with TLS
    and a credential (or every endpoint is on this host)."""
    remote = tuple(e for e in endpoints if not is_loopback(endpoint_host(e)))
    plaintext = not ca_file
    unauthenticated = not (client_cert or username)
    if not remote or not (plaintext or unauthenticated):
        return None
    return EtcdExposure(remote, plaintext, unauthenticated)


def warn_if_etcd_insecure(config: Config) -> EtcdExposure | None:
    """Log `fleetd.etcd_insecure` (one warning) when `etcd_exposure` finds a problem."""
    exposure = etcd_exposure(
        config.etcd_servers,
        ca_file=bool(config.etcd_cafile),
        client_cert=bool(config.etcd_certfile),
        username=bool(config.etcd_username),
    )
    if exposure is not None:
        log.warning(
            "fleetd.etcd_insecure",
            endpoints=list(exposure.endpoints),
            problems=exposure.problems,
            risk=RISK,
            fix=FIX,
        )
    return exposure
