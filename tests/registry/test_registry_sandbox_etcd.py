"""The sandbox's etcd waits on etcd's own READY=1 (sd_notify), not on a /health polling loop.

Real etcd for the ready paths; stand-in processes (via `command()`) for the failure paths: one
that exits at once, one that never notifies, one that notifies but serves no /health.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fleetd.sandbox.etcd import EtcdCluster, EtcdSandboxError, EtcdServer
from fleetd.sandbox.notify import NotifySocket, NotReady, ProcessExited


class FakeEtcd(EtcdServer):
    """An EtcdServer whose process is a small Python script instead of etcd."""

    def __init__(self, data_dir: Path, script: str) -> None:
        super().__init__(data_dir)
        self.script = script

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_start_waits_for_etcds_ready_notification(tmp_path: Path) -> None:
    server = EtcdServer(tmp_path / "etcd").start()
    try:
        assert server.running and server.health()[0]
        assert _environ(server.pid or 0)["NOTIFY_SOCKET"].startswith("@fleetd-etcd-")
        server.etcdctl("put", "/k", "v")
        server.kill()
        server.start()  # same data dir and ports, a new notify socket
        assert server.etcdctl("get", "--print-value-only", "/k").strip() == "v"
    finally:
        server.stop()


def test_cluster_members_become_ready_together(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "cluster").start()
    try:
        assert all(m.health()[0] for m in cluster)
        cluster.members[1].etcdctl("put", "/c", "1")
        assert cluster.members[2].etcdctl("get", "--print-value-only", "/c").strip() == "1"
    finally:
        cluster.stop()


def test_a_process_that_exits_fails_at_once(tmp_path: Path) -> None:
    server = FakeEtcd(tmp_path / "etcd", "import sys; print('bad flag'); sys.exit(3)")
    # the deadline is far away: only the exit can end this wait
    with pytest.raises(EtcdSandboxError, match=r"exited with code 3.*bad flag"):
        server.start(timeout=3600)
    assert not server.running


def test_no_ready_before_the_deadline(tmp_path: Path) -> None:
    server = FakeEtcd(tmp_path / "etcd", "import time; time.sleep(3600)")
    with pytest.raises(EtcdSandboxError, match=r"not ready after .*no READY=1"):
        server.start(timeout=0.3)
    assert not server.running  # start() stopped what it launched


def test_ready_but_unhealthy_says_why(tmp_path: Path) -> None:
    script = (
        "import os, socket, time\n"
        "addr = os.environ['NOTIFY_SOCKET']\n"
        "addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.sendto(b'STATUS=booting\\nREADY=1', addr)\n"
        "time.sleep(3600)\n"
    )
    server = FakeEtcd(tmp_path / "etcd", script)
    with pytest.raises(EtcdSandboxError, match="sent READY=1 but is not healthy"):
        server.start(timeout=3600)
    assert not server.running


def test_notify_socket_ignores_other_messages_and_sees_exit(tmp_path: Path) -> None:
    import socket
    import subprocess

    with NotifySocket(tmp_path / "notify") as notify:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client.sendto(b"STATUS=starting", str(notify.path))
        with pytest.raises(NotReady):
            notify.wait_ready(0.05)
        client.sendto(b"MAINPID=1\nREADY=1\n", str(notify.path))
        notify.wait_ready(3600)
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        try:
            with pytest.raises(ProcessExited):
                notify.wait_ready(3600, proc.pid)
        finally:
            proc.wait()
    assert not (tmp_path / "notify").exists()
