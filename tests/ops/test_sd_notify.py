"""fleetd/sd_notify.py, the sending end of sd_notify, against real datagram sockets; and what a
real fleetd process sends, in order, to the socket it is given (the receiving end systemd would
be: tests/ops/test_fleet_service.py runs the same under a real systemd).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import uuid
from collections.abc import Iterator

import pytest

from fleetd.registry import Registry
from fleetd.sandbox.etcd import EtcdServer
from fleetd.sandbox.machine import Machine
from fleetd.sd_notify import Notifier
from tests.ops.fleet_host import BIN, DEADLINE, fleetd_flags


@pytest.mark.parametrize(
    ("environ", "address", "watchdog_usec"),
    [
        # not started by systemd (or without Type=notify): tell nobody
        ({}, None, 0),
        ({"WATCHDOG_USEC": "30000000"}, None, 0),
        # a socket file, or one in the abstract namespace
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", 0),
        ({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/42"}, "@/org/freedesktop/systemd1/notify/42", 0),
        # WatchdogSec=30s, meant for this process or for whoever runs (no WATCHDOG_PID)
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000"}, "/n", 30_000_000),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, "/n", 30_000_000),
        # meant for another process (fleetd started by a wrapper that kept the variables)
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, "/n", 0),
        # nonsense is ignored, not fatal
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "soon"}, "/n", 0),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "0"}, "/n", 0),
        # an AF_VSOCK address (systemd 253, VMs): not supported, so not notifying
        ({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "30000000"}, None, 0),
    ],
    ids=[
        "nothing", "watchdog-without-socket", "path", "abstract", "watchdog", "watchdog-our-pid",
        "watchdog-other-pid", "watchdog-garbage", "watchdog-zero", "vsock",
    ],
)  # fmt: skip
def test_the_environment_systemd_gives_is_read_then_taken_away(
    environ: dict[str, str], address: str | None, watchdog_usec: int
) -> None:
    environ = {k: v.format(pid=os.getpid()) for k, v in environ.items()}
    environ["PATH"] = "/usr/bin"
    notifier = Notifier.from_environment(environ)
    assert (notifier.address, notifier.watchdog_usec) == (address, watchdog_usec)
    assert environ == {"PATH": "/usr/bin"}  # fleetd's children inherit none of it


def test_the_keep_alive_comes_every_half_of_watchdog_sec() -> None:
    assert Notifier("/n", 30_000_000).watchdog_interval == 15.0
    assert Notifier("/n").watchdog_interval is None


@pytest.fixture
def receiver(short_dirs) -> Iterator[tuple[socket.socket, str]]:  # type: ignore[no-untyped-def]
    """A bound datagram socket and the NOTIFY_SOCKET naming it (a file)."""
    path = short_dirs() / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(DEADLINE)
        yield sock, str(path)


def test_messages_are_datagrams_of_lines(receiver: tuple[socket.socket, str]) -> None:
    sock, address = receiver
    notifier = Notifier(address)
    notifier.status("connecting to etcd")
    notifier.ready("serving")
    notifier.stopping("stopping (units keep running)")
    assert [sock.recv(4096) for _ in range(3)] == [
        b"STATUS=connecting to etcd",
        b"READY=1\nSTATUS=serving",
        b"STOPPING=1\nSTATUS=stopping (units keep running)",
    ]
    notifier.close()


def test_an_abstract_socket_is_reached_by_its_name() -> None:
    name = f"@fleetd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        sock.settimeout(DEADLINE)
        assert Notifier(name).send("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_nobody_listening_is_logged_not_fatal(short_dirs) -> None:  # type: ignore[no-untyped-def]
    assert not Notifier(str(short_dirs() / "gone")).send("READY=1")
    assert not Notifier().send("READY=1")  # no socket: nothing to tell


async def test_the_keep_alives_run_while_the_daemon_runs(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, address = receiver
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = Notifier(address, watchdog_usec=20_000)  # every 10 ms: several during the wait

    async def daemon() -> str:
        for _ in range(3):  # three keep-alives arrive while it runs
            assert await asyncio.wait_for(loop.sock_recv(sock, 4096), DEADLINE) == b"WATCHDOG=1"
        return "done"

    assert await notifier.with_watchdog(daemon()) == "done"
    # none after it: the keep-alive task ended with it (and the socket was closed)
    assert notifier._sock is None


@pytest.mark.root
async def test_fleetd_tells_its_phases_then_ready_then_stopping(
    etcd: EtcdServer, key_prefix: str, registry: Registry
) -> None:
    """A real fleetd in a sandbox machine, with the variables systemd would give it."""
    name = f"@fleetd-test-{uuid.uuid4().hex}"
    received: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sock:
        sock.bind("\0" + name[1:])
        loop = asyncio.get_running_loop()

        async def until(line: bytes) -> None:
            while not any(line in message.split(b"\n") for message in received):
                received.append(await loop.sock_recv(sock, 4096))

        async with Machine(f"ntf{os.getpid() % 100000}") as machine:
            proc = await machine.exec(
                str(BIN / "fleetd"), *fleetd_flags(machine, etcd.endpoints, key_prefix),
                env={"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "60000000"},
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                await asyncio.wait_for(until(b"READY=1"), DEADLINE)
                # READY=1 came once the machine was registered and the API listened
                assert machine.machine_id in (await registry.snapshot()).machines
                api = f"/proc/{machine.systemd_pid}/root/run/fleet.sock"  # api_socket's default
                assert stat.S_ISSOCK(os.stat(api).st_mode)
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(until(b"STOPPING=1"), DEADLINE)
                assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    lines = [line.decode() for message in received for line in message.split(b"\n")]
    statuses = [line.removeprefix("STATUS=") for line in lines if line.startswith("STATUS=")]
    serving = f"serving: machine {machine.machine_id[:8]} registered, engine "
    assert statuses[:3] == [
        f"connecting to etcd ({', '.join(etcd.endpoints)})",
        "connecting to systemd, adopting the units it runs",
        f"registering machine {machine.machine_id} in etcd",
    ], statuses
    # then serving, standby or leader (the engine may win before or after READY=1), then stopping
    assert statuses[3:-1], statuses
    assert all(s in (serving + "standby", serving + "leader") for s in statuses[3:-1]), statuses
    assert statuses[-1] == "stopping (units keep running)"
    # READY=1 travels with the first "serving" status; STOPPING=1 with the last status
    assert f"READY=1\nSTATUS={statuses[3]}".encode() in received
    assert received[-1] == b"STOPPING=1\nSTATUS=stopping (units keep running)"
    # the keep-alives began with the event loop, before READY=1
    assert lines.index("WATCHDOG=1") < lines.index("READY=1")
