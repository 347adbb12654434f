"""The sending end of systemd's sd_notify protocol: fleetd under `Type=notify`.

systemd starts a `Type=notify` service with `NOTIFY_SOCKET` (a unix datagram socket; `@name` is
one in the abstract namespace) and, with `WatchdogSec=`, with `WATCHDOG_USEC` (and
`WATCHDOG_PID`, the process they are meant for). fleetd tells it, one datagram each:
- `READY=1` once it serves: `systemctl start fleet` returns then, not at the fork;
- `STATUS=...` the phase it is in (connecting to etcd, registering, serving, leader or not),
  shown by `systemctl status fleet`;
- `STOPPING=1` when it begins to stop on its own (`fleetd leave`, a component that died);
- `WATCHDOG=1` every half of `WatchdogSec=`, from the event loop (`with_watchdog`). If the loop
  is stuck, the keep-alives stop and systemd kills fleetd (SIGABRT: `faulthandler` writes every
  thread's Python traceback to the journal first) and `Restart=` starts it again; its units,
  which are systemd's own, run on and the new fleetd adopts them.

The keep-alive timer is the one periodic thing fleetd does: it is the mechanism systemd's
watchdog asks for (sd_watchdog_enabled(3)), it checks no state, and it runs only under a
`WatchdogSec=`. Without `NOTIFY_SOCKET` every call is a no-op. A datagram that cannot be sent is
logged and dropped (the socket never blocks the loop): fleetd does not stop for want of telling.
The sandbox holds the receiving end (`fleetd/sandbox/notify.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import socket
from collections.abc import Coroutine, MutableMapping
from typing import Any, TypeVar

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Notifier:
    """Tells systemd how fleetd is doing; `Notifier()` (no socket) tells nobody."""

    def __init__(self, address: str | None = None, watchdog_usec: int = 0) -> None:
        self.address = address  # NOTIFY_SOCKET as systemd gave it: a path, or "@" + a name
        self.watchdog_usec = watchdog_usec  # 0: no watchdog
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> Notifier:
        """The notifier systemd asked for, taking its variables out of `environ` (as
        sd_notify's `unset_environment` does) so fleetd's children (journalctl, systemctl,
        ssh) do not inherit them."""
        address = environ.pop("NOTIFY_SOCKET", "") or None
        usec, pid = environ.pop("WATCHDOG_USEC", ""), environ.pop("WATCHDOG_PID", "")
        if address is not None and not address.startswith(("/", "@")):
            log.warning("sd_notify.unsupported_socket", socket=address, action="not notifying")
            address = None
        watchdog = 0
        if usec and (not pid or pid == str(os.getpid())):  # a WATCHDOG_PID of another process
            try:
                watchdog = int(usec)
            except ValueError:
                watchdog = 0
            if watchdog <= 0:
                log.warning("sd_notify.bad_watchdog_usec", value=usec, action="no keep-alives")
                watchdog = 0
        return cls(address, watchdog if address is not None else 0)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives: half of WatchdogSec=, as sd_watchdog_enabled(3) advises
        (None: no watchdog)."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def send(self, *assignments: str) -> bool:
        """One datagram of `KEY=value` lines; whether it was sent (False without a socket)."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(message, target)
        except OSError as err:
            log.warning(
                "sd_notify.not_sent", message=assignments, socket=self.address, error=str(err)
            )
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def with_watchdog(self, main: Coroutine[Any, Any, T]) -> T:
        """Run `main` while sending keep-alives from this event loop (when systemd asked for
        them); the keep-alives end with it."""
        interval = self.watchdog_interval
        if interval is None:
            try:
                return await main
            finally:
                self.close()
        # systemd's watchdog kills with SIGABRT: have it write where each thread was first
        faulthandler.enable()
        log.info("fleetd.watchdog", keep_alive_every=interval, timeout=self.watchdog_usec / 1e6)
        keep_alive = asyncio.create_task(self._keep_alive(interval), name="sd-watchdog")
        try:
            return await main
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
            self.close()

    async def _keep_alive(self, interval: float) -> None:
        """WATCHDOG=1 now and every `interval` seconds: a timer on the event loop, so a blocked
        loop sends nothing. It checks nothing either: the keep-alive itself is the news."""
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)  # the watchdog keep-alive timer, not a state poll
