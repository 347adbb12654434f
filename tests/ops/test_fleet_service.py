"""fleet.service and fleet.socket as shipped, under a real systemd: `Type=notify` (READY=1 once
fleetd serves), the watchdog (a fleetd whose loop is stuck is restarted and adopts its units),
socket activation across restarts, STOPPING=1, the `fleet` group, KillMode.

Each test gets a fresh sandbox machine with the shipped files installed (tests/ops/fleet_host.py
says what is adapted, and why). Waits are on D-Bus signals of the machine's manager, etcd and
the processes themselves, each with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from fleetd.registry import Registry
from fleetd.sandbox.etcd import EtcdServer
from fleetd.sandbox.machine import Machine
from tests.ops.fleet_host import (
    BIN,
    DEADLINE,
    FleetHost,
    cgroup_of,
    in_order,
    move_to_cgroup,
)

pytestmark = pytest.mark.root

HELLO = """\
[Unit]
Description=runs on whatever happens to fleetd

[Service]
ExecStart=/bin/sleep infinity
"""


@pytest_asyncio.fixture
async def host(etcd: EtcdServer, key_prefix: str) -> AsyncIterator[FleetHost]:
    async with Machine(f"svc{os.getpid() % 100000}") as machine:
        yield FleetHost(machine, etcd.endpoints, key_prefix)


async def start_hello(host: FleetHost, tmp_path: Path) -> int:
    """hello.service started through fleetd; its main PID."""
    (tmp_path / "hello.service").write_text(HELLO)
    await host.fleetctl_ok("start", str(tmp_path / "hello.service"))
    pid = await host.main_pid("hello.service")
    assert pid > 0
    return pid


async def test_systemctl_start_returns_once_the_machine_is_registered_and_the_api_answers(
    host: FleetHost, registry: Registry
) -> None:
    # no fleet.socket: fleetd binds the API socket itself (api_socket, /var/run/fleet.sock), so
    # a READY=1 sent before it listens would leave fleetctl facing "no such file"
    await host.install(socket=False)
    await host.start("fleet.service")

    # nothing waited for: start returned after READY=1, which fleetd sends only then
    assert host.machine.machine_id in (await registry.snapshot()).machines
    listed = await host.fleetctl_ok("list-machines", "--full", "--no-legend")
    assert listed.split() == [host.machine.machine_id, "127.0.0.1", "-"]
    props = await host.show("fleet.service", "ActiveState", "StatusText", "Type", "WatchdogUSec")
    assert props["ActiveState"] == "active"
    assert props["Type"] == "notify"
    assert props["WatchdogUSec"] == "30s"
    assert props["StatusText"].startswith(
        f"serving: machine {host.machine.machine_id[:8]} registered, engine "
    ), props


async def test_a_fleetd_whose_event_loop_is_stuck_is_restarted_and_adopts_its_units(
    host: FleetHost, tmp_path: Path
) -> None:
    await host.install(service={"WatchdogSec": "4s", "RestartSec": "1s"})
    await host.start("fleet.service")
    unit_pid = await start_hello(host, tmp_path)
    stuck = await host.main_pid("fleet.service")

    async with host.watch("fleet.service") as watch:
        # SIGSTOP halts the whole process, its event loop with it: no more keep-alives, the
        # same as a loop blocked in a call that never returns
        os.kill(stuck, signal.SIGSTOP)
        await watch.until(
            in_order(
                ("deactivating", "stop-watchdog"),  # systemd's verdict: no keep-alive in time
                ("activating", "auto-restart"),  # Restart=on-failure
                ("active", "running"),  # the new fleetd sent READY=1
            )
        )

    restarted = await host.main_pid("fleet.service")
    assert restarted not in (0, stuck)
    assert (await host.show("fleet.service", "NRestarts"))["NRestarts"] == "1"
    # the watchdog's SIGABRT reached fleetd, which wrote where its threads were
    journal = await host.journal(300)
    assert "Fatal Python error: Aborted" in journal, journal

    # the unit ran on, and the new fleetd took it over: it stops it when asked
    assert await host.main_pid("hello.service") == unit_pid
    units = await host.fleetctl_ok("list-units", "--full", "--no-legend")
    assert units.split() == [
        "hello.service",
        f"{host.machine.machine_id}/127.0.0.1",
        "active",
        "running",
    ]
    async with host.watch("hello.service") as hello:
        await host.fleetctl_ok("stop", "hello.service")
        await hello.until(in_order(("inactive", None)))


async def test_requests_wait_in_fleet_socket_while_fleetd_restarts(host: FleetHost) -> None:
    await host.install(service={"RestartSec": "1s"})
    await host.start("fleet.socket")
    await host.start("fleet.service")
    socket_run = (await host.show("fleet.socket", "InvocationID"))["InvocationID"]

    # `systemctl restart fleet` restarts fleetd only: the socket (and its backlog) stays
    first = await host.main_pid("fleet.service")
    async with host.watch("fleet.socket") as sock:
        rc, out = await host.systemctl("restart", "fleet.service")
        assert rc == 0, out
    assert all(state[0] == "active" for state in sock.seen), sock.seen
    assert (await host.show("fleet.socket", "InvocationID"))["InvocationID"] == socket_run
    second = await host.main_pid("fleet.service")
    assert second not in (0, first)

    # A request sent while no fleetd accepts sits in the backlog; fleetd dies (SIGKILL while
    # stopped: it never accepted the request), systemd restarts it, the new fleetd answers.
    os.kill(second, signal.SIGSTOP)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(host.path("/run/fleet.sock")))
        client.sendall(
            b"GET /fleet/v1/machines HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n"
        )
        async with host.watch("fleet.service") as service:
            os.kill(second, signal.SIGKILL)
            await service.until(in_order(("activating", "auto-restart"), ("active", "running")))
        client.setblocking(False)
        answer = await asyncio.wait_for(read_all(client), DEADLINE)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert host.machine.machine_id.encode() in answer
    assert await host.main_pid("fleet.service") not in (0, second)
    assert (await host.show("fleet.socket", "InvocationID"))["InvocationID"] == socket_run


async def read_all(client: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    while chunk := await loop.sock_recv(client, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_fleetd_leave_says_stopping_and_is_not_restarted(
    host: FleetHost, tmp_path: Path
) -> None:
    await host.install(socket=False)
    await host.start("fleet.service")
    await start_hello(host, tmp_path)

    async with host.watch("fleet.service") as watch:
        await host.run(str(BIN / "fleetd"), "leave")  # SIGUSR2 through /run/fleet/fleetd.pid
        seen = await watch.until(in_order(("inactive", None)))
    # STOPPING=1 came first: systemd saw fleetd stopping while it still stopped its units
    assert ("deactivating", "stop-sigterm") in seen, seen
    props = await host.show("fleet.service", "ActiveState", "Result", "NRestarts")
    assert props == {"ActiveState": "inactive", "Result": "success", "NRestarts": "0"}, (
        await host.journal()
    )
    assert (await host.show("hello.service", "ActiveState"))["ActiveState"] == "inactive"


async def test_a_configuration_error_is_the_status_and_is_not_retried(host: FleetHost) -> None:
    await host.install(socket=False, flags=["--agent-ttl=soon"])
    rc, _ = await host.systemctl("start", "fleet.service")
    assert rc != 0
    props = await host.show(
        "fleet.service", "ActiveState", "Result", "ExecMainStatus", "NRestarts", "StatusText"
    )
    assert props["ActiveState"] == "failed"
    assert props["ExecMainStatus"] == "2"
    assert props["NRestarts"] == "0"  # RestartPreventExitStatus=2
    assert props["StatusText"].startswith(
        "configuration error: invalid value for agent_ttl (flag --agent-ttl)"
    ), props


# What a user outside root runs to ask the API: Debian's python3 (world-readable, unlike this
# checkout, which may sit in a directory only root can enter), one request on the socket.
_ASK = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect('/run/fleet.sock')\n"
    "except PermissionError as err:\n"
    "    sys.exit(f'refused: {err}')\n"
    "s.sendall(b'GET /fleet/v1/machines HTTP/1.0\\r\\nHost: fleet\\r\\n\\r\\n')\n"
    "print(s.makefile('rb').readline().decode().strip())\n"
)


async def test_the_api_socket_is_for_root_and_the_fleet_group(host: FleetHost) -> None:
    await host.install()
    await host.start("fleet.socket")
    sock = os.stat(host.path("/run/fleet.sock"))
    assert (sock.st_uid, sock.st_gid, sock.st_mode & 0o777) == (0, host.fleet_gid, 0o660)

    nobody = ["setpriv", "--reuid=65534", "--regid=65534"]
    rc, _, err = await host.run_as([*nobody, "--clear-groups"], "/usr/bin/python3", "-c", _ASK)
    assert rc != 0
    assert "refused: [Errno 13] Permission denied" in err, err
    # a member of the group: the connection starts fleetd (socket activation) and is answered
    rc, out, err = await host.run_as(
        [*nobody, f"--groups={host.fleet_gid}"], "/usr/bin/python3", "-c", _ASK
    )
    assert (rc, out.strip()) == (0, "HTTP/1.0 200 OK"), err
    # and root's fleetctl too
    await host.fleetctl_ok("list-machines", "--no-legend")


async def test_stopping_fleetd_ends_the_helpers_it_leaves_not_its_units(
    host: FleetHost, tmp_path: Path
) -> None:
    await host.install(socket=False)
    await host.start("fleet.service")
    unit_pid = await start_hello(host, tmp_path)
    fleetd = await host.main_pid("fleet.service")
    group = cgroup_of(fleetd)
    assert cgroup_of(unit_pid) != group  # a unit is systemd's, in a cgroup of its own

    # a helper of fleetd's (journalctl, ssh) that would outlive it: a process in its cgroup
    helper = await asyncio.create_subprocess_exec("sleep", "infinity")
    move_to_cgroup(helper.pid, group)

    rc, out = await host.systemctl("stop", "fleet.service")
    assert rc == 0, out
    assert await asyncio.wait_for(helper.wait(), DEADLINE) == -signal.SIGKILL
    assert await host.main_pid("hello.service") == unit_pid
