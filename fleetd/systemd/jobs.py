"""systemd jobs matched with their end: the `JobRemoved` that carries a job's result.

StartUnit/StopUnit/RestartUnit answer with a job's object path; the job's end comes later as a
`JobRemoved` signal, matched here by that path. The signal may overtake the method's reply, so
while a call for a unit is in flight the results of that unit's jobs are kept until the caller
asks for them. When the bus drops, every waiter gets the error instead of waiting forever.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from fleetd.errors import TemporaryError
from fleetd.systemd.dbus import JobRemoved

__all__ = ["Jobs"]


class Jobs:
    """The jobs callers wait for, and the results of those that ended before being asked."""

    def __init__(self, job_timeout: float) -> None:
        self.job_timeout = job_timeout  # a job still running then is given up (TemporaryError)
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}  # merged jobs: many
        self._results: dict[str, tuple[str, str]] = {}  # job -> (unit, result)
        self._inflight: Counter[str] = Counter()

    @contextmanager
    def in_flight(self, unit: str) -> Iterator[None]:
        """A call that makes a job for `unit` is under way: keep its jobs' results meanwhile."""
        self._inflight[unit] += 1
        try:
            yield
        finally:
            self._inflight[unit] -= 1
            if not self._inflight[unit]:
                del self._inflight[unit]
                for j in [j for j, (u, _) in self._results.items() if u == unit]:
                    del self._results[j]

    async def result(self, job: str, what: str) -> str:
        """The result of `job` ("done", "failed", ...), once its JobRemoved came; `what` (the
        call that made it) names the job in the error when it does not end in time."""
        if job in self._results:  # kept until no call for this unit is in flight
            return self._results[job][1]
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job, []).append(fut)
        try:
            return await asyncio.wait_for(fut, self.job_timeout)
        except TimeoutError as exc:
            raise TemporaryError(f"{what}: job {job} did not finish") from exc
        finally:
            waiters = self._waiters.get(job, [])
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._waiters.pop(job, None)

    def removed(self, event: JobRemoved) -> None:
        for fut in self._waiters.pop(event.job, ()):
            if not fut.done():
                fut.set_result(event.result)
        if self._inflight[event.unit]:  # removed before StartUnit's caller saw the path
            self._results[event.job] = (event.unit, event.result)

    def fail(self, exc: Exception) -> None:
        """The bus is gone: no JobRemoved will come for the jobs waited for."""
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)
        self._waiters.clear()
