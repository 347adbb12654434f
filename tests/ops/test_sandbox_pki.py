"""The sandbox's PKI (`fleetd sandbox up --tls`): what it writes, and who never loads it."""

from __future__ import annotations

import ipaddress
import ssl
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from fleetd.sandbox.pki import make_pki


def test_fleetd_and_fleetctl_never_load_cryptography() -> None:
    code = (
        "import sys, fleetd.main, fleetd.cli, fleetd.daemon, fleetd.sandbox.cluster;"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'cryptography'],"
        " sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_certificates_names_usages_and_file_modes(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ca_name="a CA", clients=("m1", "sandbox"), days=3)
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pki").iterdir()}
    assert modes == {
        "ca.pem": 0o644,
        "server.pem": 0o644,
        "server-key.pem": 0o600,
        "m1.pem": 0o644,
        "m1-key.pem": 0o600,
        "sandbox.pem": 0o644,
        "sandbox-key.pem": 0o600,
    }
    assert pki.client_cert == pki.client("m1")[0]  # the first client's

    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    client = x509.load_pem_x509_certificate(pki.client("m1")[0].read_bytes())
    # etcd takes a certificate's CN as the user when no password comes: never a user's name
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "fleetd-m1"
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    validity = client.not_valid_after_utc - client.not_valid_before_utc
    assert validity.days == 3  # and five minutes

    # both chains verify as a TLS peer checks them; each key belongs to its certificate
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    policy = PolicyBuilder().store(Store([ca]))
    policy.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(
        server, []
    )
    policy.build_client_verifier().verify(client, [])
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.load_cert_chain(*map(str, pki.client("sandbox")))
