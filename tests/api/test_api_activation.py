"""Socket activation: fleetd serves on the unix socket systemd hands it as fd 3 (LISTEN_FDS)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

from fleetd.api.client import Client
from fleetd.registry import EtcdConfig

DEADLINE = 20.0  # a bound against hanging, not an expectation of speed

CHILD = """
import asyncio, json, sys
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: "ready"
from fleetd.api.server import APIServer
from fleetd.registry import EtcdConfig, Registry

async def main():
    endpoints, prefix = json.loads(sys.argv[1])
    async with Registry(EtcdConfig(endpoints=endpoints, key_prefix=prefix)) as registry:
        server = APIServer(registry, "c" * 32)
        await server.start()  # no path: only the activated socket
        print("ready", server.unix_path, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""

# as systemd does: the socket at fd 3, then exec the service with LISTEN_PID naming its own PID
LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.executable, [sys.executable, "-c", *sys.argv[2:]])
"""


async def test_serves_the_socket_systemd_passes(etcd_config: EtcdConfig, sock_dir: Path) -> None:
    path = str(sock_dir / "activated.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    fd = listener.fileno()
    args = json.dumps([list(etcd_config.endpoints), etcd_config.key_prefix])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCHER, str(fd), CHILD, args,
        pass_fds=(fd,), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    listener.close()
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
        assert ready.split() == [b"ready", b"None"]  # no socket path of its own
        client = Client(f"unix://{path}", timeout=10)
        assert await asyncio.to_thread(client.units) == []
        assert await asyncio.to_thread(client.put_unit, "act.service", options=[
            {"section": "Service", "name": "ExecStart", "value": "/bin/true"}]) == 201  # fmt: skip
    finally:
        proc.kill()  # our own child, by its PID
        await proc.wait()
