"""Security checks beyond tests/api: unit names that try to leave the units directory, secrets kept
out of the logs, and the API socket's mode and group as another user sees them.

Real components throughout: a real APIServer on a unix socket, a real etcd (with auth where it
matters), a real namespaced systemd machine with an agent for the units directory, the real
`fleetd` entry point for the start-up error, and real users (setpriv) for the socket rights.
"""

from __future__ import annotations

import asyncio
import grp
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from fleetd import logs
from fleetd.api.server import APIServer
from fleetd.model import Job, JobState, UnitContent
from fleetd.model import Machine as MachineDoc
from fleetd.registry import EtcdAuthError, EtcdConfig, Registry
from fleetd.sandbox.etcd import EtcdServer
from fleetd.unit import UnitNameError
from tests.api.api_helpers import raw
from tests.faults.harness import BIN, report
from tests.faults.inprocess import LOOP, Node
from tests.running import engine_running
from tests.waiting import until

# the other users run the system's python (stdlib only): the venv may not be readable to them
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


JSON = {"Content-Type": "application/json"}


# --- unit names never escape the units directory ---------------------------------------------
HOSTILE = [
    # (URL path segment as sent, expected status)
    ("..%2F..%2Fetc%2Fpasswd.service", 400),
    ("..%2F..%2F..%2F..%2F..%2Ftmp%2Ffleet-escape.service", 400),
    ("a%2Fb.service", 400),
    ("a/b.service", 404),  # a raw "/" is another path: no such resource (fleet answers 404 too)
    ("..%2Fescape.service", 400),
    (".x.service", 400),
    ("%00.service", 400),
    ("a%00b.service", 400),
    ("..", 400),
    ("%2E%2E%2Fx.service", 400),
    ("x%5C..%5C..%5Cy.service", 201),  # backslashes are a legal (systemd-escaped) name, stays put
]


@pytest.mark.root
async def test_unit_names_never_escape_the_units_dir(registry: Registry, sock_dir: Path) -> None:
    node = Node("sec", registry, 5, "127.0.0.41")
    server = APIServer(registry, "e" * 32)
    try:
        await node.start()
        await server.start(sock_dir / "fleet.sock")
        units_dir = node.manager.units.path
        body = json.dumps(
            {
                "desiredState": "launched",
                "options": [
                    {
                        "section": "Service",
                        "name": "ExecStart",
                        "value": "/bin/sh -c 'exec sleep infinity'",
                    }
                ],
            }
        )
        answers = []
        async with engine_running(registry, node.id):
            for segment, expected in HOSTILE:
                status, _, data = await asyncio.to_thread(
                    raw, server.unix_path, "PUT", f"/fleet/v1/units/{segment}", body, JSON
                )
                answers.append((segment, status))
                assert status == expected, (segment, status, data)
                if status >= 400:
                    err = json.loads(data)["error"]
                    assert err["code"] == status and (status == 404 or len(err["message"]) > 5)
            # a rogue writer of etcd (not the API) stores a hostile name: the agent must refuse it
            rogue = await _rogue_jobs(registry)
            status, _, _ = await asyncio.to_thread(
                raw, server.unix_path, "PUT", "/fleet/v1/units/good.service", body, JSON
            )
            assert status == 201
            legal = "x\\..\\..\\y.service"
            await until(
                registry,
                lambda s: all(
                    (n, node.id) in s.states and s.states[(n, node.id)].active == "active"
                    for n in ("good.service", legal)
                ),
            )
        snap = await registry.snapshot()
        assert set(snap.jobs) - set(rogue) == {"good.service", legal}  # nothing else was accepted
        assert not node.task.done()  # the rogue names did not end the agent
        assert sorted(os.listdir(units_dir)) == sorted(["good.service", legal])
        outside = [
            name
            for name in ("passwd.service", "fleet-escape.service", "rogue-escape.service")
            if name in os.listdir("/etc") + os.listdir("/tmp")
        ]
        assert outside == []
        stray = [
            p
            for p in node.machine.root.rglob("*")
            if p.name
            in (
                "passwd.service",
                "escape.service",
                "fleet-escape.service",
                "b.service",
                "x.service",
                "rogue-escape.service",
                "abs-rogue.service",
            )
        ]
        assert stray == []
        report(
            "unit names vs the units dir",
            f"{len(HOSTILE) - 1} hostile names refused (400, or 404 for a raw '/'), "
            f"units dir holds exactly {sorted(os.listdir(units_dir))}; 0 files outside it; "
            f"jobs written straight to etcd as {rogue}: none held by the agent, which kept running",
        )
    finally:
        await server.stop()
        await node.stop()


ROGUE = ["../../rogue-escape.service", "/abs-rogue.service", ".rogue.service"]


async def _rogue_jobs(registry: Registry) -> list[str]:
    """Jobs written straight to etcd under hostile names, as a rogue writer would: the
    Registry itself refuses such names (checked here too), so their keys are put raw."""
    for name in ROGUE:
        with pytest.raises(UnitNameError):
            await registry.create_job(name, LOOP, JobState.LAUNCHED)
    content = UnitContent(LOOP)
    await registry.etcd.put(registry.keys.unit(content.hash), content.encode())
    for name in ROGUE:
        job = Job(name, content.hash, JobState.LAUNCHED)
        await registry.etcd.put(registry.keys.job(name), job.encode())
    return list(ROGUE)


# --- no secrets in logs ----------------------------------------------------------------------
@pytest.fixture
def auth_etcd(tmp_path: Path) -> Iterator[tuple[EtcdServer, str]]:
    """etcd with auth on: root, and a `fleet` user (random password) limited to /fleet/."""
    password = "pw-" + secrets.token_hex(12)
    server = EtcdServer(tmp_path / "etcd").start()
    try:
        server.etcdctl("user", "add", "root", "--new-user-password=" + secrets.token_hex(8))
        server.etcdctl("user", "grant-role", "root", "root")
        server.etcdctl("role", "add", "fleet")
        server.etcdctl("role", "grant-permission", "fleet", "readwrite", "/fleet/", "--prefix=true")
        server.etcdctl("user", "add", "fleet", "--new-user-password=" + password)
        server.etcdctl("user", "grant-role", "fleet", "fleet")
        server.etcdctl("auth", "enable")
        yield server, password
    finally:
        server.stop()


async def test_no_secrets_in_logs(auth_etcd: tuple[EtcdServer, str], tmp_path: Path) -> None:
    server, password = auth_etcd
    saved = structlog.get_config()
    captured = {"json": io.StringIO(), "console": io.StringIO()}
    good = EtcdConfig(
        server.endpoints,
        key_prefix="/fleet/",
        username="fleet",
        password=password,
        request_timeout=3.0,
    )
    wrong = EtcdConfig(
        server.endpoints,
        key_prefix="/fleet/",
        username="fleet",
        password=password + "-wrong",
        request_timeout=3.0,
    )
    try:
        for style, stream in captured.items():
            logs.configure(verbosity=2, json=style == "json", stream=stream)
            async with Registry(good) as reg:  # debug logging, every kind of call
                await reg.create_job(f"s-{style}.service", LOOP, JobState.LAUNCHED)
                await reg.snapshot()
                lease = await reg.register_machine(MachineDoc("m" * 32), ttl=5)
                await lease.revoke()
            with pytest.raises(EtcdAuthError) as refused:
                await Registry(wrong).connect()
            structlog.get_logger("test").error("registry.refused", error=str(refused.value))
            assert password not in str(refused.value) and password not in repr(good)
    finally:
        structlog.configure(**saved)
    # the real daemon, refused by etcd: its one error line and everything before it
    conf = tmp_path / "fleet.conf"
    conf.write_text(
        f"etcd_servers={server.client_url}\netcd_username=fleet\n"
        f"etcd_password={password}-wrong\nverbosity=2\n"
        f"runtime_dir={tmp_path / 'run'}\napi_socket={tmp_path / 'fleet.sock'}\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    done = await asyncio.to_thread(
        subprocess.run,
        [BIN / "fleetd", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean,
    )
    assert done.returncode == 2, done.stderr
    texts = {
        **{k: v.getvalue() for k, v in captured.items()},
        "fleetd stderr": done.stderr + done.stdout,
    }
    assert "refused user 'fleet'" in texts["json"] and "refused" in texts["fleetd stderr"]
    for name, text in texts.items():
        assert password not in text, f"the etcd password appears in the {name} log"
    report(
        "no secrets in logs",
        ", ".join(
            f"{k}: {len(v.splitlines())} lines, 0 with the password" for k, v in texts.items()
        ),
    )


# --- the API socket: mode 0660 and a configured group, as other users see it ---------------
def _connect_as(user: str, group: str, path: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError: print('denied')\n"
    )
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={user}",
            f"--regid={group}",
            "--clear-groups",
            PYTHON,
            "-c",
            code,
            path,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(
    shutil.which("setpriv") is None or not (_has_group("daemon") and _has_group("nogroup")),
    reason="needs setpriv and the daemon and nogroup groups",
)
@pytest.mark.root("a socket of another group, clients run as other users")
@pytest.mark.parametrize("group", ["daemon", "1"], ids=["by-name", "by-gid"])
async def test_socket_0660_with_group_admits_only_that_group(
    registry: Registry, sock_dir: Path, group: str
) -> None:
    os.chmod(sock_dir, 0o755)  # the directory is not what is tested: the socket's own rights are
    server = APIServer(registry, "e" * 32)
    await server.start(sock_dir / "fleet.sock", socket_group=group)
    try:
        st = os.stat(server.unix_path)
        assert st.st_mode & 0o777 == 0o660 and st.st_gid == grp.getgrnam("daemon").gr_gid
        member = await asyncio.to_thread(_connect_as, "nobody", "daemon", server.unix_path)
        other = await asyncio.to_thread(_connect_as, "nobody", "nogroup", server.unix_path)
        assert member.stdout.strip() == "connected", member.stderr
        assert other.stdout.strip() == "denied", other.stderr
        report(
            f"API socket, group {group}",
            f"mode {st.st_mode & 0o777:o}, gid {st.st_gid}; a member of "
            "the group connects, another user is denied",
        )
    finally:
        await server.stop()


def test_unknown_socket_group_is_one_clear_startup_error(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    done = subprocess.run(
        [
            BIN / "fleetd",
            "--api-socket-group=no-such-group-xyz",
            f"--runtime-dir={tmp_path / 'run'}",
            f"--api-socket={tmp_path / 'fleet.sock'}",
            "--etcd-servers=http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(lines) == 1 and "no group named 'no-such-group-xyz'" in lines[0], lines
    report("unknown api_socket_group", f"exit {done.returncode}, one line: {lines[0]}")
