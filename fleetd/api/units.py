"""`/units` and `/units/{name}` (`api/units.go`), and `x/units`, many of their requests in one."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import structlog
from aiohttp import web

from fleetd.api.context import Context
from fleetd.api.pagination import paged
from fleetd.api.rolling import begin_rollout
from fleetd.api.schema import unit_json
from fleetd.api.serialization import Fail, failure_of, granted, json_response, read_json
from fleetd.model import Job, JobState, RolloutAction
from fleetd.reconcile.rollout_request import rolls_out
from fleetd.reconcile.unit_batch import BatchItem, creates, desired_states, read_batch
from fleetd.reconcile.unit_put import (
    Create,
    Replace,
    SetDesired,
    plan_created_meanwhile,
    plan_put,
    read_put,
)
from fleetd.registry import EtcdUnavailable, JobNotFound, Registry, Submitted, UnitExists

__all__ = ["routes"]

log = structlog.get_logger(__name__)


# --- handlers --------------------------------------------------------------------------------
def routes(ctx: Context, prefix: str) -> list[web.RouteDef]:
    # Writers of one unit through this fleetd take turns, so their guarded etcd writes do not
    # race each other into RegistryConflict (writers on other machines still can, rarely).
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock_of(name: str) -> asyncio.Lock:
        lock = locks.get(name)
        if lock is None:
            lock = locks[name] = asyncio.Lock()
        return lock

    async def collection(request: web.Request) -> web.Response:
        if request.method != "GET":
            raise Fail(405, "only GET supported against this resource")
        tok = ctx.page_token(request)
        snapshot = await ctx.listing(tok)
        return json_response(paged("units", ctx.units_of(snapshot), tok, snapshot.revision))

    async def item(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if request.method == "GET":
            snapshot = await ctx.registry.units_snapshot([name])  # this unit's keys only
            job = snapshot.jobs.get(name)
            unit = unit_json(snapshot, job) if job is not None else None
            if unit is None:
                raise Fail(404, "unit does not exist")
            return json_response(unit)
        if request.method == "PUT":
            body = await read_json(request)
            async with lock_of(name):
                return await put(body, name)
        if request.method == "DELETE":
            return await delete(name)
        raise Fail(405, "only GET, PUT and DELETE supported against this resource")

    # One limit for every batch this fleetd serves: fleetctl sends several batches at once, and
    # hundreds of etcd requests in flight made some wait past etcd_request_timeout (503).
    batch_writes = asyncio.Semaphore(_BATCH_CONCURRENCY)
    destroys = _Destroys(ctx.registry)

    async def batch(request: web.Request) -> web.Response:
        """`POST x/units`: many unit requests in one (docs/api.md). Each is answered as its
        own GET, PUT or DELETE would be, in order; they run concurrently, a few at a time."""
        items = granted(read_batch(await read_json(request)))
        # the GETs together: their units' keys read at one revision, not the whole registry
        gets = [item.name for item in items if item.method == "GET"]
        found = await ctx.registry.units_snapshot(gets) if gets else None
        # the deletes together, with those of the batches served meanwhile: the registry is
        # read once for all of them, not once each (nor once per batch)
        deletes = [item.name for item in items if item.method == "DELETE"]
        destroyed = dict(zip(deletes, await destroys.destroy(deletes), strict=True))
        # new units together: a few transactions for all (those that exist go the usual way)
        created = await create_new(items)
        # desired states of existing units together, likewise (`fleetctl start` of submitted
        # units: a thousand were two thousand etcd round trips, 32 at a time)
        desired = await set_desired_together(items)

        def read(name: str) -> dict[str, Any]:
            assert found is not None
            job = found.jobs.get(name)
            unit = unit_json(found, job) if job is not None else None
            if unit is None:
                raise Fail(404, "unit does not exist")
            return {"name": name, "status": 200, "unit": unit}

        async def write(item: BatchItem) -> dict[str, Any]:
            method, name = item.method, item.name
            async with batch_writes:
                if method == "DELETE":
                    response = destroyed_response(name, destroyed[name])
                elif name in created:
                    response = web.Response(status=201)
                elif name in desired:
                    response = web.Response(status=SetDesired.status)
                else:
                    async with lock_of(name):
                        response = await put(item.body, name)
            return {"name": name, "status": response.status}

        async def one(item: BatchItem) -> dict[str, Any]:
            try:
                return read(item.name) if item.method == "GET" else await write(item)
            except Exception as err:
                answer = failure_of(err, what=f"{request.path} {item.method} {item.name}")
                if answer is None:
                    raise
                code, message = answer
                return {"name": item.name, "status": code,
                        "error": {"code": code, "message": message}}  # fmt: skip

        results = await asyncio.gather(*(one(item) for item in items))
        return json_response({"responses": results})

    async def create_new(items: list[BatchItem]) -> set[str]:
        """Create, as one PUT of each would, the units of a batch's PUTs that bring valid
        options (`Registry.create_many`); returns the names created. The rest (invalid, or
        already there) are left to `put`, which answers them as it would alone."""
        wanted = [(name, c.unit, c.desired) for name, c in creates(items).items()]
        if not wanted:
            return set()
        created = set()
        for (name, unit, desired), result in zip(
            wanted, await ctx.registry.create_many(wanted), strict=True
        ):
            if result is Submitted.CREATED:
                created.add(name)
                log.info("api.unit_created", unit=name, hash=unit.hash, desired=desired.value)
        return created

    async def set_desired_together(items: list[BatchItem]) -> set[str]:
        """Set, as one PUT of each would, the desired states a batch's PUTs set alone
        (`Registry.set_desired_many`); returns the names done. The rest (a unit that does not
        exist, a write that kept losing, etcd unreachable) are left to `put`, which answers
        them as it would alone."""
        wanted = desired_states(items)
        if not wanted:
            return set()
        try:
            results = await ctx.registry.set_desired_many(list(wanted.items()))
        except EtcdUnavailable:
            return set()  # each is tried alone, and answered with its own error
        done = set()
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, Job):
                done.add(name)
                log.info("api.unit_desired_state", unit=name, desired=result.desired.value)
        return done

    def destroyed_response(name: str, error: Exception | None) -> web.Response:
        if isinstance(error, JobNotFound):
            raise Fail(404, "unit does not exist")
        if error is not None:
            raise error
        log.info("api.unit_destroyed", unit=name)
        return web.Response(status=204)

    async def delete(name: str) -> web.Response:
        try:
            async with lock_of(name):
                await ctx.registry.destroy(name)
        except JobNotFound:
            raise Fail(404, "unit does not exist") from None
        log.info("api.unit_destroyed", unit=name)
        return web.Response(status=204)

    async def put(body: object, name: str) -> web.Response:
        """One unit PUT: the request checked, the unit's job read, the decision applied."""
        request = granted(read_put(name, body))  # refused before etcd is read
        decision = granted(plan_put(request, await ctx.registry.get_job(name)))
        if isinstance(decision, Create):
            if await create(name, decision):
                return web.Response(status=decision.status)
            decision = granted(plan_created_meanwhile(request, await ctx.registry.get_job(name)))
        if isinstance(decision, Replace):
            await replace(name, decision)
        elif isinstance(decision, SetDesired):
            await set_desired(name, decision.desired)
        return web.Response(status=decision.status)

    async def create(name: str, decision: Create) -> bool:
        """Whether the unit was created; False when another writer created it meanwhile with
        the very same content (with other content: fleet's 409)."""
        try:
            result = await ctx.registry.create_job(name, decision.unit, decision.desired)
        except UnitExists as err:
            raise Fail(409, str(err)) from None
        if result is not Submitted.CREATED:
            return False
        log.info("api.unit_created", unit=name, hash=decision.unit.hash,
                 desired=decision.desired.value)  # fmt: skip
        return True

    async def replace(name: str, decision: Replace) -> None:
        """Replace the unit's content — or, for a launched Global unit, begin a rollout of the
        new version (docs/rolling-updates.md): every machine at once was fleet's way."""
        snapshot = await ctx.registry.units_snapshot([name])
        if rolls_out(snapshot, name, decision.unit, decision.desired):
            await begin_rollout(ctx, name, RolloutAction.UPDATE, decision.unit)
            return
        try:
            job = await ctx.registry.replace_job(name, decision.unit, decision.previous)
            if decision.desired is not None and decision.desired != job.desired:
                job = await ctx.registry.set_desired(name, decision.desired)
        except JobNotFound:
            raise Fail(404, "unit does not exist") from None
        log.info("api.unit_replaced", unit=name, hash=decision.unit.hash,
                 previous=decision.previous, desired=job.desired.value)  # fmt: skip

    async def set_desired(name: str, desired: JobState) -> None:
        try:
            job = await ctx.registry.set_desired(name, desired)
        except JobNotFound:
            raise Fail(404, "unit does not exist") from None
        log.info("api.unit_desired_state", unit=name, desired=job.desired.value)

    return [
        web.route("*", f"{prefix}/units", collection),
        web.route("*", f"{prefix}/units/{{name}}", item),
        web.post(f"{prefix}/x/units", batch),
    ]


_BATCH_CONCURRENCY = 32  # unit requests of all batches in flight at once, per fleetd


class _Destroys:
    """The deletes of the `x/units` batches this fleetd serves together go to the registry
    together. `destroy_many` lists every job once per call, and fleetctl sends a destroy of
    1,000 units as ten batches at once: ten listings of the whole registry became one or two.

    As the systemd adapter's reloads (`fleetd/systemd/reloads.py`): the first caller opens a
    round and schedules its flush; callers arriving before the flush starts join it; rounds
    run one at a time, so the deletes arriving during one go into the next.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._names: list[str] = []
        self._done: asyncio.Future[list[Exception | None]] | None = None
        self._turn = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()

    async def destroy(self, names: list[str]) -> list[Exception | None]:
        """`Registry.destroy_many(names)`, in a round shared with other callers."""
        if not names:
            return []
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._flush(), name="api-destroys")
            self._flushes.add(task)  # held until done: no task is dropped half-way
            task.add_done_callback(self._flushes.discard)
        done, first = self._done, len(self._names)
        self._names += names
        results = await asyncio.shield(done)  # a caller leaving does not end the round
        return results[first : first + len(names)]

    async def _flush(self) -> None:
        async with self._turn:
            names, done = self._names, self._done
            self._names, self._done = [], None
            assert done is not None
            try:
                done.set_result(await self._registry.destroy_many(names))
            except Exception as exc:  # forwarded, not handled: each caller raises it
                done.set_exception(exc)
                done.exception()  # retrieved: a caller that left does not leave it unread
            finally:
                if not done.done():  # cancelled (shutdown): the callers go with it
                    done.cancel()
