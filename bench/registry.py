"""Registry overhead against raw etcd3aio calls doing the same etcd work, in the same run.

- writes/s: `Registry.publish_state` (a put on a lease) vs `kv.put`, and `Registry.schedule`
  (a guarded txn) vs the same `kv.txn` built by hand; sequential, one client each.
- watch latency: time from issuing a write to the consumer holding its event, one write at a
  time; `Registry.watch` (typed, decoded events) vs `watch.watch` (raw WatchResponse).

Runs its own etcd (sandbox) on loopback; figures go to docs/benchmarks.md, block `registry`.
Logging is at WARNING, as the per-write debug/info lines would measure the terminal instead.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
import uvloop
from etcd3aio import Etcd3Client, prefix_range_end
from etcd3aio.kv import KVService

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_block

from fleetd.model import Job, Machine, Placement, UnitState
from fleetd.registry import Changed, EtcdConfig, KeyKind, Registry
from fleetd.sandbox.etcd import EtcdServer

WRITES = 2000
LATENCY_SAMPLES = 500
ROUNDS = 3  # interleaved rounds; the best of each side is kept
if os.environ.get("BENCH_QUICK"):  # a smoke run of the script; writes nothing
    WRITES, LATENCY_SAMPLES, ROUNDS = 100, 20, 1


def _state(i: int) -> UnitState:
    return UnitState(f"u{i % 50}.service", "m1", "0" * 40, "loaded", "active", f"sub{i}")


async def _rate(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await op(i)
    return n / (time.perf_counter() - t0)


def _pct(samples: list[float], p: float) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, round(p / 100 * (len(samples) - 1)))]


async def bench(endpoint: str) -> dict[str, float]:
    reg_prefix, raw_prefix = "/bench-reg/", "/bench-raw/"
    reg = await Registry.open(EtcdConfig([endpoint], key_prefix=reg_prefix))
    raw = Etcd3Client([endpoint])
    await raw.connect()
    assert raw.kv is not None and raw.lease is not None and raw.watch is not None
    lease = await reg.register_machine(Machine("m1"), ttl=60)
    raw_lease = (await raw.lease.grant(60)).ID
    await reg.etcd.put(reg.keys.job("j.service"), Job("j.service", "0" * 40).encode())
    await raw.kv.put(f"{raw_prefix}job/j.service", Job("j.service", "0" * 40).encode())

    async def reg_put(i: int) -> None:
        await reg.publish_state(_state(i), lease)

    async def raw_put(i: int) -> None:
        s = _state(i)
        await raw.kv.put(f"{raw_prefix}state/{s.name}/m1", s.encode(), lease=raw_lease)

    async def reg_cas(i: int) -> None:
        assert await reg.schedule("j.service", f"m{i + 1}", expected=f"m{i}" if i else None)

    async def raw_cas(i: int) -> None:
        key = f"{raw_prefix}schedule/j.service"
        guard = (
            KVService.txn_compare_value(key, Placement("j.service", f"m{i}").encode())
            if i
            else KVService.txn_compare_version(key, 0)
        )
        resp = await raw.kv.txn(
            [KVService.txn_compare_version(f"{raw_prefix}job/j.service", 0, result=1), guard],
            [KVService.txn_op_put(key, Placement("j.service", f"m{i + 1}").encode())],
        )
        assert resp.succeeded

    out: dict[str, float] = {}
    for round_no in range(ROUNDS):
        base = round_no * WRITES
        for name, op in (("reg_put", reg_put), ("raw_put", raw_put)):
            rate = await _rate(WRITES, lambda i, op=op, base=base: op(base + i))
            out[name] = max(out.get(name, 0.0), rate)
        await raw.kv.delete(f"{raw_prefix}schedule/j.service")
        await reg.etcd.delete(reg.keys.schedule("j.service"))
        for name, op in (("reg_cas", reg_cas), ("raw_cas", raw_cas)):
            out[name] = max(out.get(name, 0.0), await _rate(WRITES, op))
        await raw.kv.delete(f"{raw_prefix}schedule/j.service")
        await reg.etcd.delete(reg.keys.schedule("j.service"))

    # --- watch latency: registry and raw samples interleaved, one write at a time -----------
    reg_lat: list[float] = []
    raw_lat: list[float] = []
    snap = await reg.snapshot()
    rev = (await raw.kv.get(raw_prefix)).header.revision
    end = prefix_range_end(raw_prefix)
    stream = raw.watch.watch(raw_prefix, range_end=end, start_revision=rev + 1)
    async with reg.watch(snap.revision + 1) as events:
        try:
            for i in range(LATENCY_SAMPLES):
                n = 10_000 + i
                t0 = time.perf_counter()
                await reg.publish_state(_state(n), lease)
                async for event in events:
                    if (
                        isinstance(event, Changed)
                        and event.kind is KeyKind.STATE
                        and event.doc.sub == f"sub{n}"
                    ):
                        break
                reg_lat.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await raw_put(n)
                async for resp in stream:
                    if resp.events:
                        break
                raw_lat.append(time.perf_counter() - t0)
        finally:
            await stream.aclose()

    for name, samples in (("reg", reg_lat), ("raw", raw_lat)):
        out[f"{name}_p50"] = statistics.median(samples) * 1000
        out[f"{name}_p99"] = _pct(samples, 99) * 1000
    await lease.revoke()
    await reg.close()
    await raw.close()
    return out


def report(r: dict[str, float]) -> str:
    def ratio(ours: float, base: float) -> str:
        return f"**{ours / base:.2f}x**"

    return "\n".join(
        [
            "## Registry overhead vs raw etcd3aio (same etcd, same run)",
            "",
            f"Sequential writes ({WRITES} per side, best of {ROUNDS} interleaved rounds) and "
            f"write→event latency ({LATENCY_SAMPLES} writes, one at a time), local etcd 3.5.",
            "",
            "| measure | raw etcd3aio | Registry | overhead (time ratio) |",
            "|---|---:|---:|---:|",
            f"| put on a lease (publish_state), writes/s | {r['raw_put']:,.0f} | "
            f"{r['reg_put']:,.0f} | {ratio(r['raw_put'], r['reg_put'])} |",
            f"| guarded txn (schedule CAS), writes/s | {r['raw_cas']:,.0f} | "
            f"{r['reg_cas']:,.0f} | {ratio(r['raw_cas'], r['reg_cas'])} |",
            f"| watch latency p50, ms | {r['raw_p50']:.2f} | {r['reg_p50']:.2f} | "
            f"{ratio(r['reg_p50'], r['raw_p50'])} |",
            f"| watch latency p99, ms | {r['raw_p99']:.2f} | {r['reg_p99']:.2f} | "
            f"{ratio(r['reg_p99'], r['raw_p99'])} |",
            "",
            "Overhead is Registry time / raw time (1.00x = none; goal <= 1.2x). The Registry side "
            "includes JSON encode/decode, typed events, the resumable watch and structlog calls "
            "(filtered at WARNING).",
        ]
    )


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp, EtcdServer(Path(tmp) / "etcd") as server:
        results = uvloop.run(bench(server.endpoint))
    text = report(results)
    print(text)
    write_block("registry", text)


if __name__ == "__main__":
    main()
