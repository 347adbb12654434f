"""status and journal through the API, against a real namespaced `systemd --user` machine, and
forwarded from the fleetd of another machine over its peer listener."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from api_helpers import HELLO, UnixHTTP, engine_running, machine, publish

from fleetd.api.client import PREFIX, APIError, Client
from fleetd.api.server import APIServer, TLSFiles
from fleetd.model import JobState
from fleetd.registry import EtcdConfig, Registry
from fleetd.sandbox.machine import Machine
from fleetd.sandbox.pki import make_peer_pki
from fleetd.systemd import SystemdManager
from fleetd.systemd.journal import JournalStream
from fleetd.unit import UnitFile, UnitOption
from tests.waiting import until

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]

A, B = "a" * 32, "b" * 32  # B runs the units (it has the systemd); A forwards to B
DEADLINE = 20.0  # a bound against hanging, not an expectation of speed
HELLO_UNIT = UnitFile.from_options(UnitOption(**o) for o in HELLO)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sd_machine() -> AsyncIterator[Machine]:
    async with Machine(f"tapi{os.getpid() % 100000}") as m:
        yield m


@pytest_asyncio.fixture(loop_scope="module")
async def registry(etcd_config: EtcdConfig) -> AsyncIterator[Registry]:
    async with Registry(etcd_config) as reg:
        yield reg


class Recording:
    """The real SystemdManager, remembering the journal streams the API opened."""

    def __init__(self, manager: SystemdManager) -> None:
        self.manager = manager
        self.streams: list[JournalStream] = []

    def journal(self, name: str, *, lines: int | None = None, follow: bool = False):
        stream = self.manager.journal(name, lines=lines, follow=follow)
        self.streams.append(stream)
        return stream

    async def status(self, name: str) -> str:
        return await self.manager.status(name)


@pytest_asyncio.fixture(loop_scope="module")
async def cluster(
    sd_machine: Machine, registry: Registry, tmp_path: Path, sock_dir: Path
) -> AsyncIterator[tuple[Client, Client, Recording]]:
    """Two fleetd APIs: B with systemd and a peer listener, A forwarding to B."""
    async with SystemdManager(sd_machine.systemd_config(units_dir=tmp_path / "units")) as mgr:
        inspector = Recording(mgr)
        pki = tmp_path / "pki"  # the peer listener speaks mutual TLS (test_api_peer_tls.py)
        make_peer_pki(pki, {"a": "127.0.0.1", "b": "127.0.0.1"})
        tls = {
            n: TLSFiles(str(pki / f"{n}.pem"), str(pki / f"{n}-key.pem"), str(pki / "ca.pem"))
            for n in "ab"
        }
        b = APIServer(registry, B, inspector=inspector)
        await b.start(sock_dir / "b.sock", peer=("127.0.0.1", 0), peer_tls=tls["b"])
        peer_port = b.peer_address[1]
        a = APIServer(
            registry,
            A,
            peer_url=lambda m, _ip: f"https://127.0.0.1:{peer_port}" if m == B else None,
            peer_ssl=tls["a"].client_context(),
        )
        await a.start(sock_dir / "a.sock")
        leases = [await machine(registry, B, "127.0.0.2"), await machine(registry, A, "127.0.0.1")]
        try:
            yield (
                Client(f"unix://{a.unix_path}", timeout=10),
                Client(f"unix://{b.unix_path}", timeout=10),
                inspector,
            )
        finally:
            await a.stop()
            await b.stop()
            for lease in leases:
                await lease.revoke()


async def run_on_b(registry: Registry, cluster, name: str, unit=HELLO) -> None:  # type: ignore[no-untyped-def]
    """Submit `name` pinned to B, let the engine place it, start it as B's agent would."""
    options = [*unit, {"section": "X-Fleet", "name": "MachineID", "value": B}]
    client_a, _, inspector = cluster
    assert (
        await asyncio.to_thread(client_a.put_unit, name, options=options, desired_state="launched")
        == 201
    )
    async with engine_running(registry, A):
        await until(registry, lambda s: name in s.placements)
    unit = UnitFile.from_options(UnitOption(**o) for o in options)
    await inspector.manager.load(name, unit)
    await inspector.manager.start_unit(name)
    snapshot = await registry.snapshot()
    lease = await registry.grant_lease(10)
    await publish(registry, lease, name, B, snapshot.jobs[name].unit_hash, active="active")


async def test_status_locally_and_forwarded(registry: Registry, cluster) -> None:
    client_a, client_b, inspector = cluster
    await run_on_b(registry, cluster, "hello.service")
    for client in (client_b, client_a):  # served by B itself, then forwarded by A to B
        text = await asyncio.to_thread(client.status, "hello.service")
        assert "hello.service" in text and "active (running)" in text

    with pytest.raises(APIError) as err:
        await asyncio.to_thread(client_a.status, "nope.service")
    assert (err.value.code, err.value.message) == (404, "Unit nope.service does not exist.")
    await registry.create_job("idle.service", HELLO_UNIT, JobState.INACTIVE)
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(client_a.status, "idle.service")
    assert (err.value.code, err.value.message) == (
        409,
        "Unit idle.service does not appear to be loaded.",
    )
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(lambda: list(client_a.journal("idle.service")))
    assert (err.value.code, err.value.message) == (
        409,
        "Unit idle.service does not appear to be running.",
    )
    await inspector.manager.stop_unit("hello.service")


async def test_global_unit_status_comes_from_every_machine_running_it(
    registry: Registry, cluster
) -> None:
    client_a, _, inspector = cluster
    options = [*HELLO, {"section": "X-Fleet", "name": "Global", "value": "true"}]
    assert await asyncio.to_thread(client_a.put_unit, "glob.service", options=options,
                                   desired_state="launched") == 201  # fmt: skip
    unit = UnitFile.from_options(UnitOption(**o) for o in options)
    await inspector.manager.load("glob.service", unit)
    await inspector.manager.start_unit("glob.service")
    lease = await registry.grant_lease(10)
    await publish(registry, lease, "glob.service", B, unit.hash, active="active")
    text = await asyncio.to_thread(client_a.status, "glob.service")  # B's, forwarded
    assert "glob.service" in text and "active (running)" in text
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(lambda: list(client_a.journal("glob.service")))
    assert err.value.code == 400 and "global unit glob.service" in err.value.message
    await inspector.manager.stop_unit("glob.service")


async def test_journal_follow_streams_and_ends_with_the_client(registry: Registry, cluster) -> None:
    client_a, client_b, inspector = cluster
    await run_on_b(registry, cluster, "chatty.service")

    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    enough = threading.Event()

    def follow() -> None:  # through A, forwarded to B
        stream = client_a.journal("chatty.service", lines=0, follow=True)
        try:
            for chunk in stream:
                for line in chunk.decode().splitlines():
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                if enough.is_set():
                    return
        finally:
            stream.close()  # the client disconnects

    opened = len(inspector.streams)
    reader = asyncio.create_task(asyncio.to_thread(follow))
    seen = 0
    while seen < 2:  # the unit writes a line a second: lines arrive as they are written
        line = await asyncio.wait_for(lines.get(), DEADLINE)
        seen += "Hello World" in line
    enough.set()
    await asyncio.wait_for(reader, DEADLINE)  # returns after the next chunk

    stream = inspector.streams[opened]  # the follow B opened for A's request
    assert stream.proc is not None
    await asyncio.wait_for(stream.proc.wait(), DEADLINE)  # journalctl ended with the client
    assert not os.path.exists(f"/proc/{stream.proc.pid}")  # and was reaped  # noqa: ASYNC240

    # the lines seen above are in the journal: a journal without follow shows them (asked right
    # after the start, it could come before the unit's first line)
    chunks = await asyncio.to_thread(lambda: b"".join(client_b.journal("chatty.service", lines=5)))
    assert b"Hello World" in chunks
    await inspector.manager.stop_unit("chatty.service")


async def test_journal_follow_of_a_unit_without_lines_yet_shows_its_first_lines(
    registry: Registry, cluster, tmp_path: Path
) -> None:
    """`fleetctl start x && fleetctl journal -f x`: the follow can begin before the unit's first
    line (journalctl 252's own `--follow --lines N` then skipped the first lines for good)."""
    client_a, _, inspector = cluster
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = f"read x < {fifo}; echo L1; echo L2; echo L3; exec sleep 600"
    unit = [{"section": "Service", "name": "ExecStart", "value": f"/bin/sh -c '{script}'"}]
    await run_on_b(registry, cluster, "quiet.service", unit)  # running, no line written yet
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    following = asyncio.Event()
    conn = UnixHTTP(client_a.endpoint.removeprefix("unix://"), timeout=DEADLINE)

    def follow() -> None:  # through A, forwarded to B
        conn.request("GET", f"{PREFIX}/x/units/quiet.service/journal?lines=10&follow=true")
        resp = conn.getresponse()  # its headers: journalctl follows on B
        assert resp.status == 200
        loop.call_soon_threadsafe(following.set)
        with contextlib.suppress(OSError, http.client.IncompleteRead):  # ended by the shutdown
            while chunk := resp.read1(65536):
                for line in chunk.decode().splitlines():
                    loop.call_soon_threadsafe(lines.put_nowait, line.rsplit(": ", 1)[-1])

    reader = asyncio.create_task(asyncio.to_thread(follow))
    try:
        await asyncio.wait_for(following.wait(), DEADLINE)
        await asyncio.wait_for(asyncio.to_thread(fifo.write_text, "go\n"), DEADLINE)  # now L1-3
        seen = [await asyncio.wait_for(lines.get(), DEADLINE) for _ in range(3)]
        assert seen == ["L1", "L2", "L3"]
    finally:
        if conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)  # the client goes away: the read ends
        await asyncio.wait_for(reader, DEADLINE)
        conn.close()
    await inspector.manager.stop_unit("quiet.service")


async def test_stopping_the_api_ends_a_followed_journal(
    registry: Registry, cluster, sock_dir: Path
) -> None:
    """A followed journal never ends by itself: stopping fleetd's API ends it at once (aiohttp
    would wait its 60 s shutdown grace for it: `fleetd sandbox restart` took 10 s, SIGKILL)."""
    _, _, inspector = cluster
    await run_on_b(registry, cluster, "followed.service")
    server = APIServer(registry, B, inspector=inspector)  # another API of B's
    await server.start(sock_dir / "c.sock")
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def follow() -> str:
        stream = Client(f"unix://{sock_dir / 'c.sock'}", timeout=10).journal(
            "followed.service", lines=1, follow=True
        )
        try:
            for chunk in stream:
                loop.call_soon_threadsafe(lines.put_nowait, chunk.decode())
        except APIError as err:  # Unreachable: the server went away mid-stream
            return err.message
        return "ended"

    opened = len(inspector.streams)
    reader = asyncio.create_task(asyncio.to_thread(follow))
    try:
        assert "Hello World" in await asyncio.wait_for(lines.get(), DEADLINE)
        await asyncio.wait_for(server.stop(), DEADLINE)  # a bound, far below aiohttp's 60 s
        assert "lost the fleet API" in await asyncio.wait_for(reader, DEADLINE)
        stream = inspector.streams[opened]
        assert stream.proc is not None and stream.proc.returncode is not None  # reaped
    finally:
        await server.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
    await inspector.manager.stop_unit("followed.service")
