"""How to reach etcd: endpoints, TLS files, credentials, timeout, key prefix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleetd.registry.keys import DEFAULT_PREFIX

__all__ = ["EtcdConfig"]


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """Connection settings. Endpoints are `host:port` (a `http(s)://` scheme is stripped).

    TLS is on when `ca_file` is set; `cert_file` + `key_file` add a client certificate.
    `tls_server_name` is the name checked in etcd's certificate when it is not the endpoint host
    (needed with several endpoints). `username`/`password` turn on etcd auth.
    """

    endpoints: Sequence[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_server_name: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log or a traceback
    request_timeout: float = 5.0
    key_prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("etcd config needs at least one endpoint")
        cleaned = [e.split("://", 1)[-1].rstrip("/") for e in self.endpoints]
        object.__setattr__(self, "endpoints", tuple(cleaned))
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("etcd client TLS needs both cert_file and key_file")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("etcd client certificate given without ca_file")
        if (self.username is None) != (self.password is None):
            raise ValueError("etcd auth needs both username and password")
        if self.request_timeout <= 0:
            raise ValueError("etcd request_timeout must be positive")

    @property
    def tls(self) -> bool:
        return self.ca_file is not None
