"""The etcd client adapter: the only module that imports etcd3aio or grpc.

It offers the registry a small, library-neutral surface — ranges at a revision, transactions
built from `Cmp`/`Put`/`Delete`/`Get` (`registry/kv.py`), leases, and watch streams of `Change`
batches — and translates every library exception into the registry's typed errors (STYLE.md
§7). Swapping the client library means rewriting this module only.

It is longer than our other modules on purpose: keeping the whole library behind one file is
the point (an import-linter contract names it), so its connection, TLS and auth, requests,
leases and watch quirks all live here rather than leak into files that would import it too.

Watch resumption is the registry's job, not the library's: etcd3aio re-creates a broken watch
stream by itself from `header.revision + 1`, which can skip events still pending for a watcher
that was catching up (and such a re-created stream once never answered at all). So watches are
asked for on the library's gRPC stub directly (`watch_ranges`: several ranges, one etcd watcher
each), all of a client's watches on one shared stream (`_SharedWatch`: one per fleetd process,
whichever roles and requests watch), a broken stream ends as WatchInterrupted, and the registry
resumes each range from the last revision it delivered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

# gRPC's fork support, on in grpcio's wheels, installs pthread_atfork handlers that restart
# gRPC's threads in the child of a fork(). fleetd runs on uvloop, whose libuv starts every child
# (journalctl, systemctl, nsenter) with a real fork(), so the handlers run, and fleetd always has
# a watch stream open: about one child in a hundred then died of SIGSEGV in a restarted
# event_engine thread before its exec (an empty journal in a failure report, a `journal -f`
# ending at once), and now and then one deadlocked there, freezing fleetd's loop (libuv waits
# for the child's exec). fleetd forks only to exec at once, the case gRPC gives this switch for
# (doc/fork_support.md); it is read when grpc is imported, so before the imports below.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import grpc
import grpc.aio
import structlog
from etcd3aio import (
    Etcd3Client,
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdTransientError,
    EtcdUnauthenticatedError,
    prefix_range_end,
)
from etcd3aio._protobuf import (
    RequestOp,
    TxnRequest,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchRequest,
)
from etcd3aio.kv import KVService

from fleetd.registry.config import EtcdConfig
from fleetd.registry.errors import (
    EtcdAuthError,
    EtcdRequestFailed,
    EtcdTLSError,
    EtcdUnavailable,
    WatchCompacted,
    WatchInterrupted,
)
from fleetd.registry.fold import Change
from fleetd.registry.kv import (
    MAX_NESTED,
    Cmp,
    Delete,
    Get,
    Guarded,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchBatch,
)

__all__ = ["EtcdClient"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

_PAGE = 1000  # keys per range page when listing a prefix
_MAX_MESSAGE = 64 * 1024 * 1024  # bytes of one gRPC message received (a listing's page)
_TLS_HINTS = ("ssl", "handshake", "certificate", "tls")


def _kv(raw: object) -> KeyValue:
    return KeyValue(
        raw.key.decode("utf-8", "surrogateescape"),  # type: ignore[attr-defined]
        bytes(raw.value),  # type: ignore[attr-defined]
        raw.create_revision,  # type: ignore[attr-defined]
        raw.mod_revision,  # type: ignore[attr-defined]
        raw.version,  # type: ignore[attr-defined]
        raw.lease,  # type: ignore[attr-defined]
    )


def _range_end(key: str, prefix: bool) -> bytes | None:
    return prefix_range_end(key.encode()) if prefix else None


_CMP_RESULT = {"==": 0, ">": 1, "<": 2, "!=": 3}  # etcdserverpb.Compare.CompareResult


def _compare(c: Cmp) -> object:
    kwargs = {"result": _CMP_RESULT[c.op], "range_end": _range_end(c.key, c.prefix)}
    match c.target:
        case "version":
            return KVService.txn_compare_version(c.key, int(c.operand), **kwargs)
        case "create":
            return KVService.txn_compare_create_revision(c.key, int(c.operand), **kwargs)
        case "value":
            assert isinstance(c.operand, bytes)
            return KVService.txn_compare_value(c.key, c.operand, **kwargs)
        case "mod":
            compare = KVService.txn_compare_version(c.key, 0, **kwargs)
            compare.target = compare.MOD  # type: ignore[attr-defined]
            compare.mod_revision = int(c.operand)  # type: ignore[attr-defined]
            return compare
    raise ValueError(f"unknown compare target {c.target!r}")


def _op(op: Op) -> object:
    match op:
        case Put(key, value, lease):
            return KVService.txn_op_put(key, value, lease=lease)
        case Delete(key, prefix):
            return KVService.txn_op_delete(key, range_end=_range_end(key, prefix))
        case Get(key, prefix, revision):
            return KVService.txn_op_get(key, range_end=_range_end(key, prefix), revision=revision)
    raise TypeError(f"not a txn op: {op!r}")


class EtcdClient:
    """One connection (one gRPC channel, round-robin over the endpoints) to an etcd cluster."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._client: Etcd3Client | None = None
        self._auth_lock = asyncio.Lock()
        self._watch: _SharedWatch | None = None  # every watch of this client, on one stream

    @property
    def endpoints(self) -> list[str]:
        return list(self.config.endpoints)

    # --- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the channel, authenticate if configured, and check etcd answers."""
        cfg = self.config
        tls: dict[str, bytes | None] = {}
        server_name = cfg.tls_server_name
        if cfg.ca_file is not None:
            try:
                tls["ca_cert"] = cfg.ca_file.read_bytes()
                if cfg.cert_file is not None and cfg.key_file is not None:
                    tls["cert_chain"] = cfg.cert_file.read_bytes()
                    tls["cert_key"] = cfg.key_file.read_bytes()
            except OSError as err:
                raise EtcdTLSError(cfg.endpoints, f"cannot read a TLS file: {err}") from None
            if server_name is None:
                # The ipv4: target has no host name; check the first endpoint's host instead.
                server_name = cfg.endpoints[0].rsplit(":", 1)[0]
        client = Etcd3Client(
            list(cfg.endpoints),
            rpc_max_attempts=3,
            watch_reconnect_backoff_seconds=0.1,
            watch_max_reconnect_backoff_seconds=2.0,
            tls_server_name=server_name if tls else None,
            **tls,
        )
        # gRPC's default 4 MiB per received message is less than a page of a listing of
        # large unit files may be; watches ask etcd to fragment their answers instead
        # (`watch_ranges`). The library takes no channel options: its manager's list is it.
        client._manager.grpc_options.append(("grpc.max_receive_message_length", _MAX_MESSAGE))
        await client.connect()
        self._client = client
        try:
            if cfg.username is not None:
                await self._authenticate()
            # A read inside our prefix: proves reachability, TLS, credentials and permission.
            await self._call(
                "connect",
                lambda c: c.kv.get(cfg.key_prefix, count_only=True, timeout=self._t),  # type: ignore[union-attr]
            )
        except BaseException:
            await self.close()
            raise
        log.info("registry.etcd_connected", endpoints=list(cfg.endpoints), tls=cfg.tls)

    async def close(self) -> None:
        if self._watch is not None:
            if not self._watch.loop.is_closed():
                self._watch.break_off(WatchInterrupted("the etcd client was closed"))
            self._watch = None
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @property
    def _t(self) -> float:
        return self.config.request_timeout

    async def _authenticate(self) -> None:
        client = self._require()
        cfg = self.config
        async with self._auth_lock:
            try:
                resp = await client.auth.authenticate(  # type: ignore[union-attr]
                    cfg.username, cfg.password, timeout=self._t
                )
            except EtcdUnauthenticatedError as err:
                raise EtcdAuthError(
                    f"etcd at {', '.join(cfg.endpoints)} refused user {cfg.username!r}: {err}"
                ) from None
            except (EtcdConnectionError, EtcdTransientError, TimeoutError) as err:
                raise self._unavailable(err) from None
            except grpc.aio.AioRpcError as err:
                raise EtcdAuthError(
                    f"etcd at {', '.join(cfg.endpoints)} refused user {cfg.username!r}: "
                    f"{err.details()}"
                ) from None
            client.set_token(resp.token)

    def _require(self) -> Etcd3Client:
        if self._client is None:
            raise RuntimeError("etcd client is not connected")
        return self._client

    def _unavailable(self, err: BaseException) -> EtcdUnavailable | EtcdTLSError:
        detail = str(err) or type(err).__name__
        if isinstance(err, TimeoutError):
            detail = f"no answer within {self._t:g}s"
        elif isinstance(err, grpc.aio.AioRpcError):
            detail = f"{err.code().name}: {err.details()}"
        if self.config.tls and any(h in detail.lower() for h in _TLS_HINTS):
            if self.config.cert_file is None:
                detail += (
                    "; no client certificate was presented (etcd_certfile, etcd_keyfile): "
                    "an etcd started with --client-cert-auth refuses such clients"
                )
            return EtcdTLSError(self.config.endpoints, detail, self.config.ca_file)
        return EtcdUnavailable(self.config.endpoints, detail)

    async def _call(self, what: str, fn: Callable[[Etcd3Client], Awaitable[T]]) -> T:
        """Run one request, translating errors; re-authenticate once on an expired token.

        When etcd was unreachable and is back (restarted), gRPC's channel may still be in its
        reconnect backoff and fail requests at once: a request that failed so waits for the
        channel to be ready again, within the request timeout, and is tried once more."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._t
        try:
            return await self._call_once(what, fn)
        except EtcdUnavailable as err:
            unavailable = err
        channel = getattr(self._require(), "_channel", None)  # etcd3aio keeps it private
        left = deadline - loop.time()
        if channel is None or left <= 0:
            raise unavailable
        try:
            async with asyncio.timeout(left):
                await channel.channel_ready()
        except TimeoutError:
            raise unavailable from None
        log.info("registry.etcd_channel_ready", retrying=what)
        return await self._call_once(what, fn)

    async def _call_once(self, what: str, fn: Callable[[Etcd3Client], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            client = self._require()
            try:
                return await fn(client)
            except EtcdUnauthenticatedError as err:
                if self.config.username is None or attempt == 2:
                    raise EtcdAuthError(f"etcd refused {what}: {err}") from None
                log.info("registry.etcd_reauthenticate", reason=str(err))
                await self._authenticate()
            except EtcdPermissionDeniedError as err:
                raise EtcdAuthError(f"etcd user lacks permission for {what}: {err}") from None
            except (EtcdConnectionError, EtcdTransientError, TimeoutError) as err:
                raise self._unavailable(err) from None
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (
                    err.details() or ""
                ):
                    raise WatchCompacted(0) from None
                raise EtcdRequestFailed(
                    f"etcd refused {what}: {err.code().name}: {err.details()}"
                ) from None
            except EtcdError as err:
                raise EtcdRequestFailed(f"etcd refused {what}: {err}") from None
        raise AssertionError("unreachable")

    # --- key-value -------------------------------------------------------------------------
    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        resp = await self._call(
            "get",
            lambda c: c.kv.get(key, revision=revision, timeout=self._t),  # type: ignore[union-attr]
        )
        return resp.header.revision, (_kv(resp.kvs[0]) if resp.kvs else None)

    async def get_prefix(self, prefix: str, revision: int = 0) -> tuple[int, list[KeyValue]]:
        """Every key under `prefix`, read at one revision (paged, pinned to the first page's)."""
        end = prefix_range_end(prefix.encode())
        start: bytes = prefix.encode()
        out: list[KeyValue] = []
        while True:
            resp = await self._call(
                "range",
                lambda c, s=start, r=revision: c.kv.get(  # type: ignore[union-attr]
                    s, range_end=end, revision=r, limit=_PAGE, timeout=self._t
                ),
            )
            if revision == 0:
                revision = resp.header.revision
            out.extend(_kv(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return revision, out
            start = bytes(resp.kvs[-1].key) + b"\0"

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        resp = await self._call(
            "put",
            lambda c: c.kv.put(key, value, lease=lease, timeout=self._t),  # type: ignore[union-attr]
        )
        return resp.header.revision

    async def delete(self, key: str, prefix: bool = False) -> int:
        resp = await self._call(
            "delete",
            lambda c: c.kv.delete(  # type: ignore[union-attr]
                key, range_end=_range_end(key, prefix), timeout=self._t
            ),
        )
        return resp.deleted

    async def txn(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        resp = await self._call(
            "txn",
            lambda c: c.kv.txn(  # type: ignore[union-attr]
                [_compare(x) for x in compare],
                [_op(x) for x in success],
                [_op(x) for x in failure],
                timeout=self._t,
            ),
        )
        gets = tuple(
            tuple(_kv(kv) for kv in r.response_range.kvs)
            for r in resp.responses
            if r.WhichOneof("response") == "response_range"
        )
        return TxnResult(resp.succeeded, resp.header.revision, gets)

    async def txns(self, writes: Sequence[Guarded], first: Sequence[Put] = ()) -> list[TxnResult]:
        """Independent guarded writes in one round trip and one revision: each is a nested
        transaction of one outer txn, so each succeeds or fails on its own guards; the puts of
        `first` run unconditionally before them (each key once in all: etcd's rule). Returns
        each write's result (`gets`: its failure branch's reads). At most MAX_NESTED writes and
        puts in all (etcd's --max-txn-ops is 128)."""
        if not 1 <= len(writes) + len(first) <= MAX_NESTED:
            raise ValueError(f"txns takes 1 to {MAX_NESTED} operations, not {len(writes)}")
        nested = [
            RequestOp(
                request_txn=TxnRequest(
                    compare=[_compare(c) for c in w.compare],
                    success=[_op(o) for o in w.success],
                    failure=[_op(o) for o in w.failure],
                )
            )
            for w in writes
        ]
        ops = [_op(p) for p in first] + nested
        resp = await self._call("txn", lambda c: c.kv.txn([], ops, timeout=self._t))  # type: ignore[union-attr]
        results = []
        for r in resp.responses[len(first) :]:
            inner = r.response_txn
            gets = tuple(
                tuple(_kv(kv) for kv in x.response_range.kvs)
                for x in inner.responses
                if x.WhichOneof("response") == "response_range"
            )
            results.append(TxnResult(inner.succeeded, resp.header.revision, gets))
        return results

    async def compact(self, revision: int) -> None:
        await self._call(
            "compact",
            lambda c: c.kv.compact(revision, physical=True, timeout=self._t),  # type: ignore[union-attr]
        )

    # --- leases ----------------------------------------------------------------------------
    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted TTL)."""
        resp = await self._call("lease grant", lambda c: c.lease.grant(ttl, timeout=self._t))  # type: ignore[union-attr]
        return resp.ID, resp.TTL

    async def time_to_live(self, lease_id: int) -> int:
        """Seconds left on a lease; -1 when it no longer exists."""
        resp = await self._call(
            "lease ttl",
            lambda c: c.lease.time_to_live(lease_id, timeout=self._t),  # type: ignore[union-attr]
        )
        return resp.TTL

    async def keep_alive_once(self, lease_id: int) -> int:
        """Renew a lease once; returns its TTL, 0 when it expired."""

        async def renew(c: Etcd3Client) -> int:
            call = c.lease.keep_alive(lease_id)  # type: ignore[union-attr]
            try:
                async with asyncio.timeout(self._t):
                    async for resp in call:
                        return resp.TTL
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise EtcdUnauthenticatedError(err.details() or "") from None
                if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise EtcdConnectionError(f"{err.code().name}: {err.details()}") from None
                raise
            finally:
                call.cancel()
            raise EtcdConnectionError("keep-alive stream closed without an answer")

        return await self._call("lease keep-alive", renew)

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._call("lease revoke", lambda c: c.lease.revoke(lease_id, timeout=self._t))  # type: ignore[union-attr]
        except EtcdRequestFailed as err:
            if "not found" not in str(err):
                raise

    # --- watch -----------------------------------------------------------------------------
    async def watch_ranges(
        self, ranges: Sequence[tuple[str, bool, int]]
    ) -> AsyncIterator[tuple[int, WatchBatch]]:
        """Batches of changes of several ranges — (key, whether a prefix, from revision) — one
        etcd watcher each, each batch with the index of its range, until the watch breaks.
        Every watch of this client shares one gRPC stream (`_SharedWatch`): a fleetd holds one
        however many of its roles and requests follow the registry.

        Raises WatchCompacted when a range's start revision is compacted, WatchInterrupted
        when the stream ends or breaks, or this watch fell too far behind it (the caller
        resumes each range from its own last revision + 1), EtcdAuthError on refused
        credentials.
        """
        self._require()
        loop = asyncio.get_running_loop()
        if self._watch is None or self._watch.loop is not loop:
            self._watch = _SharedWatch(self, loop)
        shared = self._watch
        watcher = shared.join(ranges)
        # The `created` acks must come within a request's time, or the watch is taken as
        # broken and the caller resumes (with backoff): once, after an etcd restart under
        # load, a new watch got no answer at all and its watcher waited forever. Later
        # answers come when something changes: no limit on those.
        opening = loop.time() + max(self._t, 1.0)
        try:
            while True:
                if watcher.acks < len(ranges):
                    try:
                        async with asyncio.timeout_at(opening):
                            answer = await watcher.answers.get()
                    except TimeoutError:
                        if watcher.acks < len(ranges):  # the stream is stuck: a new one for all
                            shared.break_off(WatchInterrupted(
                                f"no answer to a watch request within {self._t:g} s"
                            ))  # fmt: skip
                        continue
                else:
                    answer = await watcher.answers.get()
                if isinstance(answer, BaseException):
                    raise answer
                if answer is not _ACKED:
                    watcher.waiting -= len(answer[1].changes)
                    yield answer
        finally:
            shared.leave(watcher)

    async def _watch_error(self, err: grpc.aio.AioRpcError) -> Exception:
        """What a broken watch stream's gRPC error means to its watchers."""
        if err.code() == grpc.StatusCode.UNAUTHENTICATED and self.config.username:
            await self._authenticate()
            return WatchInterrupted("watch token expired; re-authenticated")
        if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return EtcdAuthError(f"etcd refused the watch: {err.details()}")
        return WatchInterrupted(f"{err.code().name}: {err.details()}")


# A watcher whose answers pile up unread (a slow reader: a wait whose client reads slowly, a
# planner busy with a burst) leaves the shared stream past this many events waiting, and
# resumes from its own last revision (etcd keeps what it missed, and sends it in large
# answers): the others are never held behind it, nor the memory filled by it.
_BEHIND_MAX = 20_000
_ACKED = object()  # an answer that only wakes a watcher waiting for its acks


class _Watcher:
    """One `watch_ranges` on the shared stream: its etcd watch IDs, and its answers."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.answers: asyncio.Queue[Any] = asyncio.Queue()
        self.acks = 0
        self.fragments: dict[int, list[Any]] = {}  # events of an answer etcd split, by range
        self.waiting = 0  # events in `answers`, not read yet


class _SharedWatch:
    """The client's one gRPC watch stream, carrying every watcher of the process.

    etcd multiplexes watchers on a stream by the watch ID given at creation; a reader task
    routes each answer to its watcher's queue. A watcher that leaves is cancelled on the
    stream; the stream itself ends when the last one leaves, and is opened again by the next.
    When it breaks, every watcher gets the error (each resumes on its own), and the next
    watcher opens a new stream. Fragments (etcd splits an answer past gRPC's message limit:
    a watcher catching up gets up to 1,000 revisions at once) are joined per watcher."""

    def __init__(self, client: EtcdClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client, self.loop = client, loop
        self._requests: asyncio.Queue[WatchRequest] | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._by_id: dict[int, tuple[_Watcher, int]] = {}  # watch ID → watcher, range index
        self._next_id = 1

    def join(self, ranges: Sequence[tuple[str, bool, int]]) -> _Watcher:
        if self._requests is None:
            self._open()
        assert self._requests is not None
        ids = list(range(self._next_id, self._next_id + len(ranges)))
        self._next_id += len(ranges)
        watcher = _Watcher(ids)
        for index, (watch_id, (key, prefix, start)) in enumerate(zip(ids, ranges, strict=True)):
            self._by_id[watch_id] = (watcher, index)
            self._requests.put_nowait(WatchRequest(
                create_request=WatchCreateRequest(
                    key=key.encode(),
                    range_end=_range_end(key, prefix) or b"",
                    start_revision=start,
                    watch_id=watch_id,
                    fragment=True,
                )
            ))  # fmt: skip
        return watcher

    def leave(self, watcher: _Watcher) -> None:
        self._drop(watcher)
        if not self._by_id:
            self._close()  # no watcher left: the stream goes

    def _drop(self, watcher: _Watcher, error: Exception | None = None) -> None:
        """Cancel the watcher's etcd watchers on the stream (with `error` told to it)."""
        for watch_id in watcher.ids:
            if self._by_id.pop(watch_id, None) is not None and self._requests is not None:
                self._requests.put_nowait(
                    WatchRequest(cancel_request=WatchCancelRequest(watch_id=watch_id))
                )
        if error is not None:
            watcher.answers.put_nowait(error)

    def _open(self) -> None:
        service = self.client._require().watch  # type: ignore[union-attr]
        requests: asyncio.Queue[WatchRequest] = asyncio.Queue()

        async def ask() -> AsyncIterator[WatchRequest]:
            while True:  # the stream stays open until it is cancelled
                yield await requests.get()

        # etcd3aio's `watch` takes one range per stream; its stub and credentials are used
        # directly here to ask for every range on one stream (this module is the library's
        # only user: a change of its internals shows here and nowhere else).
        call = service._stub.Watch(ask(), metadata=service._metadata or None)
        self._requests, self._call = requests, call
        self._reader = self.loop.create_task(self._read(call), name="etcd-watch-stream")

    def _close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
        self._requests = self._call = self._reader = None

    async def _read(self, call: Any) -> None:
        error: Exception
        try:
            async for resp in call:
                self._route(resp)
            error = WatchInterrupted("watch stream ended")
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and call is not self._call:
                return  # closed by `_close`
            try:
                error = await self.client._watch_error(err)
            except Exception as failed:  # re-authenticating failed: that is the watchers' error
                error = failed
        except Exception as err:  # a bug: its watchers must not wait forever
            log.exception("registry.watch_stream_failed")
            error = WatchInterrupted(f"the watch stream failed: {err!r}")
        if call is self._call:
            self.break_off(error)

    def break_off(self, error: Exception) -> None:
        """The stream is broken: every watcher gets `error` (each resumes on its own, and
        the first to come back opens a new stream)."""
        watchers = {watcher for watcher, _ in self._by_id.values()}
        self._by_id.clear()
        self._close()
        for watcher in watchers:
            watcher.answers.put_nowait(error)

    def _route(self, resp: Any) -> None:
        found = self._by_id.get(resp.watch_id)
        if found is None:
            return  # a watcher that left (its cancel is on its way)
        watcher, index = found
        if resp.canceled and resp.compact_revision <= 0:
            self._drop(watcher, WatchInterrupted(f"etcd canceled the watch: {resp.cancel_reason}"))
        elif resp.compact_revision > 0:
            self._drop(watcher, WatchCompacted(resp.compact_revision))
        elif resp.created:
            watcher.acks += 1
            if watcher.acks > len(watcher.ids):
                self._drop(watcher, WatchInterrupted("watch was re-created after a disconnect"))
            else:
                watcher.answers.put_nowait(_ACKED)
        elif resp.fragment:  # more of this answer follows: keep its events
            watcher.fragments.setdefault(index, []).extend(resp.events)
        elif resp.events or index in watcher.fragments:
            events = [*watcher.fragments.pop(index, ()), *resp.events]
            watcher.answers.put_nowait((index, _batch(resp.header.revision, events)))
            watcher.waiting += len(events)
            if watcher.waiting > _BEHIND_MAX:
                self._drop(watcher, WatchInterrupted("fell behind the shared watch stream"))


def _batch(revision: int, events: Sequence[Any]) -> WatchBatch:
    return WatchBatch(
        revision,
        tuple(
            Change(
                "delete" if ev.type == 1 else "put",
                ev.kv.key.decode("utf-8", "surrogateescape"),
                bytes(ev.kv.value),
                ev.kv.mod_revision,
            )
            for ev in events
        ),
    )
