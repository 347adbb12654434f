"""The receiving end of systemd's sd_notify protocol, for processes the sandbox starts.

A process started with `NOTIFY_SOCKET=<path>` sends datagrams such as `READY=1` to that unix
socket once it is ready (systemd, journald and etcd all do). `NotifySocket` binds such a socket;
the caller waits for READY=1 either from asyncio (`await ready()`) or synchronously
(`wait_ready(deadline, pid)`), which also returns at once if the process exits meanwhile.
Nothing is polled: each wait blocks on the socket (and the process's pidfd) until one of them
has something to say or the deadline passes.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import time
from pathlib import Path

__all__ = ["NotReady", "NotifySocket", "ProcessExited"]


class NotReady(TimeoutError):
    """No READY=1 before the deadline."""


class ProcessExited(RuntimeError):
    """The process exited before it sent READY=1."""


class NotifySocket:
    """An sd_notify socket: `ready()` / `wait_ready()` return when a READY=1 datagram arrives.

    `path` may start with "@" for a socket in the abstract namespace (no file, no length
    trouble with deep directories; sd_notify clients accept it as systemd does).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._abstract = str(path).startswith("@")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)

    @property
    def address(self) -> str:
        """The value for the child's NOTIFY_SOCKET."""
        return str(self.path)

    def __enter__(self) -> NotifySocket:
        if self._abstract:
            self._sock.bind("\0" + str(self.path)[1:])
        else:
            Path(self.path).unlink(missing_ok=True)
            self._sock.bind(str(self.path))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()
        if not self._abstract:
            Path(self.path).unlink(missing_ok=True)

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        while True:  # each receive waits for the next datagram; nothing is polled
            data = await loop.sock_recv(self._sock, 4096)
            if _is_ready(data):
                return

    def wait_ready(self, timeout: float, pid: int | None = None) -> None:
        """Block until READY=1 arrives; `ProcessExited` as soon as `pid` exits (it must be a
        child of this process or otherwise alive when called), `NotReady` after `timeout` s."""
        deadline = time.monotonic() + timeout
        pidfd = os.pidfd_open(pid) if pid is not None else None
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ, "notify")
            if pidfd is not None:
                sel.register(pidfd, selectors.EVENT_READ, "exited")
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NotReady(f"no READY=1 within {timeout:g}s")
                    for key, _ in sel.select(left):
                        if key.data == "notify":
                            if self._drain():
                                return
                        else:
                            # it may have sent READY=1 just before exiting: that still counts
                            if self._drain():
                                return
                            raise ProcessExited(f"process {pid} exited before READY=1")
            finally:
                if pidfd is not None:
                    os.close(pidfd)

    def _drain(self) -> bool:
        """Read every queued datagram; whether one of them said READY=1."""
        ready = False
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                return ready
            ready = ready or _is_ready(data)


def _is_ready(data: bytes) -> bool:
    return b"READY=1" in data.split(b"\n")
