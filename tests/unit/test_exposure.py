"""The warning at fleetd's start about an etcd anyone can write (fleetd/exposure.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.exposure import (
    PLAINTEXT,
    UNAUTHENTICATED,
    endpoint_host,
    etcd_exposure,
    is_loopback,
)

TLS, CERT, USER = "tls", "cert", "user"
LAN = "https://10.0.0.11:2379"


@pytest.mark.parametrize(
    ("endpoints", "given", "off_host", "problems"),
    [
        # fleet's classic set-up on a LAN: plain, and anyone may write
        (["http://10.0.0.11:2379"], set(), ["http://10.0.0.11:2379"], [PLAINTEXT, UNAUTHENTICATED]),
        # the scheme is not what makes TLS: https:// without etcd_cafile is plain text
        ([LAN], set(), [LAN], [PLAINTEXT, UNAUTHENTICATED]),
        # TLS, but fleetd presents nothing: etcd lets anyone in
        ([LAN], {TLS}, [LAN], [UNAUTHENTICATED]),
        # a client certificate over TLS: the quickstart's set-up, quiet
        ([LAN], {TLS, CERT}, [], []),
        # an etcd user over TLS: quiet
        ([LAN], {TLS, USER}, [], []),
        # a user without TLS: the password crosses the network in clear
        (["http://10.0.0.11:2379"], {USER}, ["http://10.0.0.11:2379"], [PLAINTEXT]),
        # http:// with etcd_cafile and a certificate: fleetd uses TLS anyway (the scheme is not read)
        (["http://10.0.0.11:2379"], {TLS, CERT}, [], []),
        # loopback stays quiet, however it is written
        (["http://127.0.0.1:2379"], set(), [], []),
        (["127.0.0.1:2379"], set(), [], []),
        (["http://127.0.0.53:2379/"], set(), [], []),
        (["http://localhost:2379"], set(), [], []),
        (["http://LOCALHOST.:2379"], set(), [], []),
        (["http://[::1]:2379"], set(), [], []),
        # one endpoint off the host is enough; only it is named
        (
            ["http://127.0.0.1:2379", "http://10.0.0.12:2379"],
            set(),
            ["http://10.0.0.12:2379"],
            [PLAINTEXT, UNAUTHENTICATED],
        ),
        # a name is not resolved: it counts as off the host
        (
            ["http://etcd.example:2379"],
            set(),
            ["http://etcd.example:2379"],
            [PLAINTEXT, UNAUTHENTICATED],
        ),
        # every address, not just a LAN's (0.0.0.0 reaches whatever listens on any interface)
        (["http://0.0.0.0:2379"], set(), ["http://0.0.0.0:2379"], [PLAINTEXT, UNAUTHENTICATED]),
        (["http://[2001:db8::1]:2379"], {TLS}, ["http://[2001:db8::1]:2379"], [UNAUTHENTICATED]),
    ],
    ids=[
        "lan-http",
        "https-without-ca",
        "tls-no-credential",
        "tls-client-cert",
        "tls-user",
        "user-in-clear",
        "http-scheme-with-ca",
        "loopback-http",
        "loopback-no-scheme",
        "loopback-any-127",
        "localhost",
        "localhost-upper-dot",
        "ipv6-loopback",
        "one-of-two-off-host",
        "name-not-resolved",
        "unspecified-address",
        "ipv6-tls-no-credential",
    ],
)
def test_etcd_exposure(
    endpoints: list[str], given: set[str], off_host: list[str], problems: list[str]
) -> None:
    found = etcd_exposure(
        endpoints, ca_file=TLS in given, client_cert=CERT in given, username=USER in given
    )
    if not problems:
        assert found is None
    else:
        assert found is not None
        assert list(found.endpoints) == off_host
        assert found.problems == problems


@pytest.mark.parametrize(
    ("endpoint", "host", "loopback"),
    [
        ("https://10.0.0.11:2379", "10.0.0.11", False),
        ("10.0.0.11:2379/", "10.0.0.11", False),
        ("http://[::1]:2379", "::1", True),
        ("127.0.0.1:2379", "127.0.0.1", True),
        ("http://etcd.localhost:2379", "etcd.localhost", True),  # RFC 6761: always this host
        ("http://localhost.example:2379", "localhost.example", False),
        ("http://[::ffff:10.0.0.1]:2379", "::ffff:10.0.0.1", False),
    ],
)
def test_endpoint_host_and_loopback(endpoint: str, host: str, loopback: bool) -> None:
    assert endpoint_host(endpoint) == host
    assert is_loopback(host) is loopback


def _fleetd_start(tmp_path: Path, etcd: str) -> list[dict[str, object]]:
    """The real `fleetd` entry point with etcd at `etcd`, stopped by a start-up error before it
    reaches the network (its API socket's group does not exist); its log lines."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    done = subprocess.run(
        [
            Path(sys.executable).parent / "fleetd",
            f"--etcd-servers={etcd}",
            "--api-socket-group=fleetd-test-no-such-group",
            f"--runtime-dir={tmp_path / 'run'}",
            f"--api-socket={tmp_path / 'fleet.sock'}",
            f"--units-directory={tmp_path / 'units'}",
            "--machine-id=0123456789abcdef0123456789abcdef",
            "--public-ip=10.0.0.11",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean,
    )
    assert done.returncode == 2, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert lines[-1]["event"] == "fleetd.cannot_start", lines
    assert "fleetd-test-no-such-group" in str(lines[-1]["error"])
    return lines


def test_fleetd_warns_once_at_start_for_a_lan_etcd_in_clear(tmp_path: Path) -> None:
    lines = _fleetd_start(tmp_path, "http://10.0.0.11:2379")  # never contacted
    warnings = [line for line in lines if line.get("event") == "fleetd.etcd_insecure"]
    assert len(warnings) == 1, lines
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["endpoints"] == ["http://10.0.0.11:2379"]
    assert warnings[0]["problems"] == [PLAINTEXT, UNAUTHENTICATED]


def test_fleetd_is_quiet_for_a_loopback_etcd(tmp_path: Path) -> None:
    lines = _fleetd_start(tmp_path, "http://127.0.0.1:2379")
    assert not [line for line in lines if line.get("event") == "fleetd.etcd_insecure"], lines
