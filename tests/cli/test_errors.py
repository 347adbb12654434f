"""Bad input to the real fleetctl gets one precise line on stderr, a non-zero exit, and changes
nothing (docs/fleetctl.md, "Errors and exit codes").

Each case runs the real entry point (a subprocess) against the real API server, registry, etcd
and engine of tests/cli/conftest.py; the unreachable endpoints are real sockets nobody serves;
TLS is a real HTTPS listener with the sandbox's PKI; the unreadable file is read by a fleetctl
that lacks the right to (as root: without CAP_DAC_OVERRIDE, so mode 000 holds).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetd.api.server import APIServer, TLSFiles
from fleetd.sandbox.pki import make_pki
from fleetd.unit import UNIT_TYPES
from tests.cli.conftest import M1, NO_SSHD, Cluster

HINT = "is fleetd running? set FLEETCTL_ENDPOINT or --endpoint"
SCHEMES = "(use unix:///path, http://host:port or https://host:port)"
SUFFIXES = ", ".join(f".{t}" for t in sorted(UNIT_TYPES))


async def fleetctl(
    *args: str, env: dict[str, str], cwd: Path, prefix: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    """The real entry point with exactly these arguments (no --endpoint added)."""
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "fleetd.cli", *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def registry_contents(cluster: Cluster) -> Any:
    snap = await cluster.registry.snapshot()
    return snap.jobs, snap.units, snap.placements


def _bad_files(work: Path) -> None:
    (work / "bad.service").write_text("[Service\nExecStart=/bin/true\n")
    (work / "noequals.service").write_text("[Service]\nExecStart /bin/true\n")
    (work / "dir.service").mkdir()
    (work / "gone.service").symlink_to("nowhere.service")
    (work / "key.pem").write_text("not a key\n")
    (work / "conflicting.service").write_text(
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\nMachineID=abc\n"
    )


# (id, arguments after `--endpoint <cluster>`, extra environment, exit code, the stderr line; a
# line ending in "..." is a prefix: the rest is OpenSSL's or click's own wording)
CASES = [
    # TLS files: named by the flag, or by the variable they came from, with the OS's reason
    ("ca-file-missing", ["--ca-file", "{work}/nope/ca.pem", "start", "hello.service"], {}, 1,
     "Error: --ca-file {work}/nope/ca.pem: No such file or directory"),
    ("ca-file-missing-env", ["start", "hello.service"], {"FLEETCTL_CA_FILE": "{work}/ca.pem"}, 1,
     "Error: FLEETCTL_CA_FILE {work}/ca.pem: No such file or directory"),
    ("cert-file-directory", ["--cert-file", "{work}", "list-units"], {}, 1,
     "Error: --cert-file {work}: Is a directory"),
    ("cert-file-missing-env", ["list-units"], {"FLEETCTL_CERT_FILE": "{work}/c.pem"}, 1,
     "Error: FLEETCTL_CERT_FILE {work}/c.pem: No such file or directory"),
    ("dashboard-ca-file-missing", ["--ca-file", "{work}/ca.pem", "dashboard", "--no-open"], {}, 1,
     "Error: --ca-file {work}/ca.pem: No such file or directory"),
    ("key-file-missing", ["--key-file", "{work}/k.pem", "list-units"], {}, 1,
     "Error: --key-file {work}/k.pem: No such file or directory"),
    ("key-file-env-without-cert", ["list-units"], {"FLEETCTL_KEY_FILE": "{work}/key.pem"}, 1,
     "Error: FLEETCTL_KEY_FILE {work}/key.pem: a key file given without its certificate file"),
    ("ca-file-not-a-certificate", ["--ca-file", "{work}/hello.service", "list-units"], {}, 1,
     "Error: --ca-file {work}/hello.service: no CA certificate in PEM form in it (..."),
    ("cert-file-not-a-certificate-env", ["list-units"],
     {"FLEETCTL_CERT_FILE": "{work}/hello.service"}, 1,
     "Error: FLEETCTL_CERT_FILE {work}/hello.service: no certificate in PEM form in it (..."),
    # endpoints that name no API
    ("endpoint-scheme", ["--endpoint", "ftp://host:1", "list-units"], {}, 1,
     f'Error: --endpoint ftp://host:1: unable to connect to host "host:1" with scheme "ftp" {SCHEMES}'),
    ("endpoint-unix-host", ["--endpoint", "unix://var/run/fleet.sock", "list-units"], {}, 1,
     f'Error: --endpoint unix://var/run/fleet.sock: unable to connect to host "var" with scheme "unix" {SCHEMES}'),
    ("endpoint-ipv6", ["--endpoint", "http://[::1", "list-units"], {}, 1,
     f"Error: --endpoint: invalid endpoint 'http://[::1': Invalid IPv6 URL {SCHEMES}"),
    ("endpoint-port", ["--endpoint", "http://127.0.0.1:99999", "list-units"], {}, 1,
     f"Error: --endpoint: invalid port in endpoint 'http://127.0.0.1:99999': Port out of range 0-65535 {SCHEMES}"),
    # numbers and booleans, from flags and from FLEETCTL_* variables: click's usage error, exit 2
    ("request-timeout-word", ["--request-timeout", "soon", "list-units"], {}, 2,
     "Error: Invalid value for '--request-timeout': 'soon' is not a number of seconds"),
    ("request-timeout-negative", ["--request-timeout", "-1", "list-units"], {}, 2,
     "Error: Invalid value for '--request-timeout': '-1' is not a positive number of seconds"),
    ("request-timeout-nan", ["--request-timeout", "nan", "list-units"], {}, 2,
     "Error: Invalid value for '--request-timeout': 'nan' is not a positive number of seconds"),
    ("request-timeout-huge", ["--request-timeout", "1e12", "list-units"], {}, 2,
     "Error: Invalid value for '--request-timeout': '1e12' is more than 86400 seconds (a day)"),
    ("request-timeout-env", ["list-units"], {"FLEETCTL_REQUEST_TIMEOUT": "3s"}, 2,
     "Error: Invalid value for FLEETCTL_REQUEST_TIMEOUT: '3s' is not a number of seconds"),
    ("ssh-timeout-env-zero", ["list-units"], {"FLEETCTL_SSH_TIMEOUT": "0"}, 2,
     "Error: Invalid value for FLEETCTL_SSH_TIMEOUT: '0' is not a positive number of seconds"),
    ("strict-host-key-checking-env", ["list-units"],
     {"FLEETCTL_STRICT_HOST_KEY_CHECKING": "maybe"}, 2,
     "Error: Invalid value for FLEETCTL_STRICT_HOST_KEY_CHECKING: 'maybe' is not a valid boolean..."),
    ("debug-env", ["list-units"], {"FLEETCTL_DEBUG": "verbose"}, 2,
     "Error: Invalid value for FLEETCTL_DEBUG: 'verbose' is not a valid boolean..."),
    ("block-attempts-word", ["start", "--block-attempts", "many", "hello.service"], {}, 2,
     "Error: Invalid value for '--block-attempts': 'many' is not a valid integer."),
    ("unknown-flag", ["start", "--now", "hello.service"], {}, 2,
     "Error: No such option '--now'..."),
    ("strict-value-is-no-command", ["--strict-host-key-checking", "false", "list-units"], {}, 2,
     "Error: No such command 'false'."),
    # unit files: fleet's message first, then the path looked at or why it cannot be used
    ("unit-missing", ["start", "missing.service"], {}, 1,
     "Error creating units: unable to find Unit(missing.service) in Registry or on filesystem "
     "(looked for file {work}/missing.service)"),
    ("unit-missing-second", ["start", "hello.service", "sub/missing"], {}, 1,
     "Error creating units: unable to find Unit(missing.service) in Registry or on filesystem "
     "(looked for file {work}/sub/missing.service)"),
    ("unit-bad-suffix", ["start", "hello.srvice"], {}, 1,
     f"Error creating units: hello.srvice has no valid unit suffix ({SUFFIXES})"),
    ("template-missing", ["load", "sub/apache@1.service"], {}, 1,
     "Error creating units: unable to find template Unit(apache@.service) in Registry or on "
     "filesystem (looked for file {work}/sub/apache@1.service, looked for file "
     "{work}/sub/apache@.service)"),
    ("unit-directory", ["submit", "dir.service"], {}, 1,
     "Error creating units: failed getting Unit(dir.service) from file {work}/dir.service: "
     "Is a directory"),
    ("unit-dangling-link", ["start", "gone"], {}, 1,
     "Error creating units: unable to find Unit(gone.service) in Registry or on filesystem "
     "(file {work}/gone.service is a symbolic link to the missing nowhere.service)"),
    ("unit-unparsable", ["start", "hello.service", "bad.service"], {}, 1,
     "Error creating units: failed getting Unit(bad.service) from file {work}/bad.service: "
     "line 1: unable to find end of section"),
    ("unit-no-equals", ["load", "noequals"], {}, 1,
     "Error creating units: failed getting Unit(noequals.service) from file "
     "{work}/noequals.service: line 2: expected Name=Value, found 'ExecStart /bin/true'"),
    ("unit-bad-name", ["submit", "bad name.service"], {}, 1,
     "Error creating units: invalid character ' ' in unit name"),
    ("unit-no-name", ["start", "hello", "sub/"], {}, 1,
     'Error creating units: argument "sub/" names no unit'),
    ("unit-invalid-requirements", ["submit", "hello", "conflicting.service"], {}, 1,
     "Error creating units: failed creating unit conflicting.service: MachineID cannot be used with Global"),
    # a template is never started or loaded: refused before anything is submitted
    ("start-template", ["start", "hello", "apache@.service"], {}, 1,
     'Error creating units: cannot activate template "apache@.service": start an instance of it, e.g. apache@1.service'),
    ("load-template", ["load", "apache@"], {}, 1,
     'Error creating units: cannot activate template "apache@.service": load an instance of it, e.g. apache@1.service'),
    ("endpoint-empty", ["--endpoint", "", "list-units"], {}, 1,
     f'Error: --endpoint "": URL scheme undefined {SCHEMES}'),
]  # fmt: skip


def _fill(text: str, work: Path) -> str:
    return text.replace("{work}", str(work))


@pytest.mark.parametrize(("args", "env", "code", "line"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
async def test_bad_input_is_one_line_and_changes_nothing(
    cluster: Cluster, args: list[str], env: dict[str, str], code: int, line: str
) -> None:
    work = cluster.workdir
    _bad_files(work)
    before = await registry_contents(cluster)
    rc, out, err = await fleetctl(
        "--endpoint", cluster.endpoint, *(_fill(a, work) for a in args),
        env={**cluster.env, **{k: _fill(v, work) for k, v in env.items()}}, cwd=work,
    )  # fmt: skip
    expected = _fill(line, work)
    assert (rc, out) == (code, "")
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    if expected.endswith("..."):
        assert err.startswith(expected[:-3]), err
    else:
        assert err == expected + "\n"
    assert await registry_contents(cluster) == before


def _unix_socket_nobody_listens(tmp: Path) -> tuple[str, Callable[[], None]]:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "dead.sock"))  # bound, never listening: connect() is refused
    return f"unix://{tmp}/dead.sock", sock.close


def _tcp_port_nobody_listens(_tmp: Path) -> tuple[str, Callable[[], None]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # held, never listening: connect() is refused
    return f"http://127.0.0.1:{sock.getsockname()[1]}", sock.close


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda tmp: (f"unix://{tmp}/none.sock", lambda: None),
                     "No such file or directory", id="unix-socket-missing"),
        pytest.param(_unix_socket_nobody_listens, "nobody listens on {tmp}/dead.sock (Connection refused)",
                     id="unix-socket-nobody-listens"),
        pytest.param(lambda tmp: (f"unix://{tmp}/hello.service", lambda: None),
                     "{tmp}/hello.service is not a socket", id="unix-path-not-a-socket"),
        pytest.param(_tcp_port_nobody_listens, "Connection refused", id="tcp-refused"),
    ],
)  # fmt: skip
@pytest.mark.parametrize(
    "command",
    [["list-units"], ["start", "hello.service"], ["stop", "hello"], ["destroy", "hello"],
     ["status", "hello"], ["journal", "hello"], ["cat", "hello"], ["list-machines"]],
    ids=lambda c: c[0],
)  # fmt: skip
async def test_an_api_nobody_serves_is_named_with_the_hint(
    workdir: Path, sock_dir: Path, make: Any, reason: str, command: list[str]
) -> None:
    from tests.cli.conftest import fleetctl_env

    endpoint, close = make(sock_dir)
    shutil.copy(workdir / "hello.service", sock_dir / "hello.service")
    try:
        rc, out, err = await fleetctl(
            "--endpoint", endpoint, *command, env=fleetctl_env(), cwd=workdir
        )
    finally:
        close()
    why = reason.replace("{tmp}", str(sock_dir))
    assert (rc, out, err) == (
        1,
        "",
        f"Error: cannot reach the fleet API at {endpoint}: {why}; {HINT}\n",
    )


async def test_the_endpoint_from_the_environment_is_named_too(
    workdir: Path, sock_dir: Path
) -> None:
    from tests.cli.conftest import fleetctl_env

    env = {**fleetctl_env(), "FLEETCTL_ENDPOINT": f"unix://{sock_dir}/none.sock"}
    rc, out, err = await fleetctl("list-units", env=env, cwd=workdir)
    assert (rc, out) == (1, "")
    assert err == (f"Error: cannot reach the fleet API at unix://{sock_dir}/none.sock: "
                   f"No such file or directory; {HINT}\n")  # fmt: skip
    env["FLEETCTL_ENDPOINT"] = "127.0.0.1:4001"
    rc, out, err = await fleetctl("list-units", env=env, cwd=workdir)
    assert (rc, out, err) == (
        1, "", f"Error: FLEETCTL_ENDPOINT 127.0.0.1:4001: URL scheme undefined {SCHEMES}\n"
    )  # fmt: skip


async def test_tls_files_over_a_real_https_listener(
    cluster: Cluster, sock_dir: Path, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    rogue = make_pki(tmp_path / "rogue", ca_name="another CA")
    server = APIServer(cluster.registry, M1)
    await server.start(sock_dir / "tls.sock", tcp=("127.0.0.1", 0),
                       tls=TLSFiles(str(pki.server_cert), str(pki.server_key), str(pki.ca)))  # fmt: skip
    host, port = server.tcp_address
    good = {
        "FLEETCTL_ENDPOINT": f"https://{host}:{port}",
        "FLEETCTL_CA_FILE": str(pki.ca),
        "FLEETCTL_CERT_FILE": str(pki.client_cert),
        "FLEETCTL_KEY_FILE": str(pki.client_key),
    }

    async def run(*args: str, **env: str) -> tuple[int, str, str]:
        return await fleetctl(*args, env={**cluster.env, **good, **env}, cwd=cluster.workdir)

    try:
        assert await run("list-units", "--no-legend") == (0, "", "")
        # the key of another certificate
        rc, out, err = await run("list-units", FLEETCTL_KEY_FILE=str(rogue.client_key))
        assert (rc, out, err) == (1, "", f"Error: FLEETCTL_KEY_FILE {rogue.client_key}: "
                                         f"not the key of {pki.client_cert}\n")  # fmt: skip
        # a key given as the certificate
        rc, out, err = await run("--cert-file", str(pki.client_key), "list-units")
        assert (rc, out) == (1, "")
        assert err.startswith(f"Error: --cert-file {pki.client_key}: no certificate in PEM form")
        # a CA that did not sign the server's certificate: the handshake fails, in one line
        rc, out, err = await run("list-units", FLEETCTL_CA_FILE=str(rogue.ca))
        assert (rc, out) == (1, "") and len(err.splitlines()) == 1
        assert err.startswith(f"Error: TLS handshake with the fleet API at https://{host}:{port} "
                              "failed: certificate verify failed")  # fmt: skip
        # the certificate file unreadable: a fleetctl without the right to read it (mode 000)
        locked = tmp_path / "locked.pem"
        shutil.copy(pki.client_cert, locked)
        locked.chmod(0)
        rc, out, err = await fleetctl(
            "list-units", env={**cluster.env, **good, "FLEETCTL_CERT_FILE": str(locked)},
            cwd=cluster.workdir, prefix=_unprivileged(),
        )  # fmt: skip
        assert (rc, out, err) == (1, "", f"Error: FLEETCTL_CERT_FILE {locked}: Permission denied\n")
    finally:
        await server.stop()


def _unprivileged() -> tuple[str, ...]:
    """A command prefix under which file modes hold: as root, drop the capabilities that
    override them (setpriv); as anyone else, nothing."""
    if os.geteuid() != 0:
        return ()
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}")


async def test_an_unreadable_unit_file_is_named(cluster: Cluster) -> None:
    work = cluster.workdir
    (work / "apache@.service").chmod(0)  # the template an instance is made from
    (work / "hello.service").chmod(0)
    before = await registry_contents(cluster)
    for args, path, name in (
        (("start", "hello"), work / "hello.service", "hello.service"),
        (("load", "apache@80.service"), work / "apache@.service", "apache@80.service"),
    ):
        rc, out, err = await fleetctl(
            "--endpoint", cluster.endpoint, *args, env=cluster.env, cwd=work,
            prefix=_unprivileged(),
        )  # fmt: skip
        assert (rc, out, err) == (
            1, "", f"Error creating units: failed getting Unit({name}) from file {path}: "
                   "Permission denied\n",
        )  # fmt: skip
    assert await registry_contents(cluster) == before


async def test_replace_with_an_unusable_file_says_why(cluster: Cluster) -> None:
    run = cluster.fleetctl
    assert (await run("submit", "hello.service"))[0] == 0
    before = await registry_contents(cluster)
    (cluster.workdir / "hello.service").write_text("[Service\n")
    rc, out, err = await run("submit", "--replace", "hello.service")
    assert (rc, out, err) == (
        1, "", f"Error creating units: failed getting Unit(hello.service) from file "
               f"{cluster.workdir}/hello.service: line 1: unable to find end of section\n",
    )  # fmt: skip
    # without --replace the registered unit is used as it is (fleet's behaviour)
    assert (await run("start", "--no-block", "hello.service"))[0] == 0
    assert (before[0]["hello.service"].unit_hash
            == (await registry_contents(cluster))[0]["hello.service"].unit_hash)  # fmt: skip


@pytest.mark.parametrize("command", ["stop", "unload", "destroy"])
async def test_units_not_found_exit_0_in_stop_unload_destroy(
    cluster: Cluster, command: str
) -> None:
    # fleet 1.0 printed `Units not found in registry` and exited 0 in all three (nothing to
    # stop, unload or destroy: the end state holds)
    assert await cluster.fleetctl(command, "nosuch.service") == (
        0, "", "Units not found in registry\n"
    )  # fmt: skip


async def test_a_bare_strict_host_key_checking_takes_no_argument(cluster: Cluster) -> None:
    run = cluster.fleetctl
    assert (await run("start", "hello.service"))[0] == 0
    listed = await run("list-units", "--no-legend")
    assert listed[0] == 0 and listed[1].startswith("hello.service\t")
    for flags in (
        ["--strict-host-key-checking"],
        ["--strict-host-key-checking", "--ssh-timeout", "5"],
        ["--strict-host-key-checking=false"],
        ["--strict-host-key-checking=true"],
    ):
        assert await run(*flags, "list-units", "--no-legend") == listed, flags
    cluster.env["FLEETCTL_STRICT_HOST_KEY_CHECKING"] = "false"
    assert await run("list-units", "--no-legend") == listed


@pytest.mark.skipif(NO_SSHD, reason="sshd or ssh-agent is missing")
async def test_strict_host_key_checking_is_honoured_in_every_form(
    cluster: Cluster, sshd: Any, tmp_path: Path
) -> None:
    # The host key of the sshd is in no known_hosts file: a strict ssh refuses it (exit 255
    # without a terminal to ask on), a non-strict one runs the command.
    port, env = sshd
    cluster.env["SSH_AUTH_SOCK"] = env["SSH_AUTH_SOCK"]
    known = str(tmp_path / "known_hosts")

    async def echo(*flags: str) -> int:
        rc, out, _ = await cluster.fleetctl(
            "--ssh-username", getpass.getuser(), "--known-hosts-file", known, *flags,
            "ssh", "--ssh-port", str(port), M1[:6], "echo", "foo",
        )  # fmt: skip
        assert out in ("", "foo\n")
        return rc

    assert await echo("--strict-host-key-checking=false") == 0
    assert await echo("--strict-host-key-checking") == 255  # bare: true, takes no argument
    assert await echo("--strict-host-key-checking=true") == 255
    cluster.env["FLEETCTL_STRICT_HOST_KEY_CHECKING"] = "false"
    assert await echo() == 0
    assert await echo("--strict-host-key-checking") == 255  # the flag wins over the variable


async def test_a_socket_fleetctl_may_not_use_is_said_so(cluster: Cluster, sock_dir: Path) -> None:
    sock = sock_dir / "fleet.sock"  # the cluster's API, served, but not for this user
    mode = sock.stat().st_mode
    sock.chmod(0)
    try:
        rc, out, err = await fleetctl(
            "--endpoint", cluster.endpoint, "list-units", env=cluster.env, cwd=cluster.workdir,
            prefix=_unprivileged(),
        )  # fmt: skip
    finally:
        sock.chmod(mode)
    assert (rc, out, err) == (
        1, "", f"Error: unable to reach the fleet API at {cluster.endpoint}: Permission denied\n"
    )  # fmt: skip
