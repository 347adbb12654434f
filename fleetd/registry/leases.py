"""A lease kept alive in the background: the agent's heartbeat and the leader's claim.

The keep-alive renews every TTL/3 (a heartbeat timer, not a poll of state). When etcd answers
that the lease is gone, `lost` is set and the task ends; while etcd is unreachable it keeps
trying (etcd extends leases across its own restarts and leader changes), logging each failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

import structlog

from fleetd.registry.errors import EtcdUnavailable
from fleetd.registry.etcd import EtcdClient

__all__ = ["Lease"]

log = structlog.get_logger(__name__)

_MIN_INTERVAL = 0.1  # seconds; never renew more often than this


class Lease:
    """A granted lease and its keep-alive task. Use as an async context manager, or call
    `revoke()` (keys on it vanish now) or `release()` (stop renewing; keys vanish at expiry)."""

    def __init__(self, etcd: EtcdClient, lease_id: int, ttl: int, *, reattached: bool) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.reattached = reattached  # True when an existing, still-alive lease was re-used
        self.lost = asyncio.Event()  # set when etcd says the lease has expired
        self.renewals = 0  # successful keep-alives so far
        self._etcd = etcd
        self._task: asyncio.Task[None] | None = None
        self._renewed = asyncio.Condition()

    def start(self) -> Lease:
        if self._task is None:
            self._task = asyncio.create_task(self._keep_alive(), name=f"lease-{self.id:x}")
        return self

    @property
    def alive(self) -> bool:
        return not self.lost.is_set()

    async def _keep_alive(self) -> None:
        interval = max(_MIN_INTERVAL, self.ttl / 3)
        # A re-attached lease may have little time left: renew it at once, then every TTL/3.
        first = 0.0 if self.reattached else interval
        try:
            while True:
                await asyncio.sleep(first)  # the heartbeat timer of a lease, not a state poll
                first = interval
                try:
                    ttl = await self._etcd.keep_alive_once(self.id)
                except EtcdUnavailable as err:
                    log.warning("registry.lease_renew_failed", lease=self.id, error=str(err))
                    continue
                if ttl <= 0:
                    log.warning("registry.lease_lost", lease=self.id)
                    self.lost.set()
                    return
                async with self._renewed:
                    self.renewals += 1
                    self._renewed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception:  # a guarded background task: its death is logged, never silent
            log.exception("registry.lease_keepalive_crashed", lease=self.id)
            self.lost.set()

    async def wait_renewals(self, count: int) -> None:
        """Wait until the keep-alive has renewed the lease `count` times in all."""
        async with self._renewed:
            await self._renewed.wait_for(lambda: self.renewals >= count or self.lost.is_set())

    async def unrenewed_for(self, seconds: float) -> bool:
        """Wait until the lease has gone `seconds` without a renewal, then True: the agent
        fences its units then, as the lease may expire before it is renewed. A deadline timer
        restarted by each renewal, not a poll. False at once when the lease is already lost (it
        is checked again after each renewal only: losing it notifies no waiter of renewals)."""
        last_renewal = time.monotonic()
        while not self.lost.is_set():
            renewals = self.renewals
            try:
                await asyncio.wait_for(
                    self.wait_renewals(renewals + 1), last_renewal + seconds - time.monotonic()
                )
            except TimeoutError:
                return True
            last_renewal = time.monotonic()
        return False

    async def release(self) -> None:
        """Stop renewing without revoking: the keys stay until the TTL runs out."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def revoke(self) -> None:
        """Stop renewing and revoke: every key attached to the lease is deleted at once."""
        await self.release()
        await self._etcd.revoke(self.id)
        self.lost.set()
        log.info("registry.lease_revoked", lease=self.id)

    async def __aenter__(self) -> Lease:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.revoke()
        except EtcdUnavailable as err:
            log.warning("registry.lease_revoke_failed", lease=self.id, error=str(err))
