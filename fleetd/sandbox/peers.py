"""The sandbox's peer PKI: machines forward status and journal requests to each other's peer
listener over mutual TLS, as a real cluster's would (docs/architecture.md).

`up` makes one CA per sandbox and one certificate per machine (SAN its IP) in `<dir>/peer-pki/`,
and keeps the CA's key there (0600, in a 0700 directory of the sandbox's) so `add` can sign the
certificate of one more machine; each fleetd gets its own certificate and the CA as flags.
These are the sandbox's own, apart from `--tls` (tls.py, etcd's certificates): peers are
always over TLS, etcd only when asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from fleetd.sandbox.state import MachineRecord, SandboxError

__all__ = ["PEER_PKI_DIR", "add_peer", "make_peer_pki", "peer_tls_flags"]

PEER_PKI_DIR = "peer-pki"


def make_peer_pki(directory: Path, machines: Sequence[MachineRecord]) -> None:
    """The peer listeners' CA and each machine's certificate (SAN its IP), in peer-pki/."""
    from fleetd.sandbox import pki  # cryptography: only the sandbox loads it

    pki.make_peer_pki(
        directory / PEER_PKI_DIR,
        {r.name: r.ip for r in machines},
        ca_name=f"fleetd sandbox peers CA {hashlib.sha1(str(directory).encode()).hexdigest()[:8]}",
        days=30,
        keep_ca_key=True,
    )


def add_peer(directory: Path, machine: MachineRecord) -> None:
    """The certificate of a machine added to a running sandbox, signed by its peer CA."""
    from fleetd.sandbox import pki  # cryptography: only the sandbox loads it

    if not (directory / PEER_PKI_DIR / "ca-key.pem").is_file():
        raise SandboxError(
            f"the sandbox at {directory} kept no key of its peer CA (an older fleetd made it): "
            "`fleetd sandbox down`, then `up`, to add machines to it"
        )
    pki.add_peer(directory / PEER_PKI_DIR, machine.name, machine.ip, days=30)


def peer_tls_flags(directory: Path, machine: str) -> list[str]:
    """Machine `machine`'s fleetd serves its peer listener, and forwards to the others, with
    its own certificate of the sandbox's peer CA (mutual TLS)."""
    pki = directory / PEER_PKI_DIR
    return [
        f"--api-tls-cert={pki / f'{machine}.pem'}",
        f"--api-tls-key={pki / f'{machine}-key.pem'}",
        f"--api-tls-ca={pki / 'ca.pem'}",
    ]
