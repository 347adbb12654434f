"""The fleet API under concurrent requests: requests/s of `list` and `start` on one fleetd's socket.

One sandbox machine (a real fleetd: API, engine and agent, on a real etcd); UNITS units are
submitted first, inactive, through the Registry. Then, for WORKERS concurrent clients (one
asyncio process, aiohttp over the unix socket, keep-alive connections), for SECONDS each:
- list: GET /fleet/v1/units (all UNITS units, one page);
- start: PUT /fleet/v1/units/NAME {"desiredState": "launched"}, each client on its own units,
  alternating with {"desiredState": "inactive"} on the next pass so that every request changes
  the desired state (a guarded etcd write, which the engine then acts on);
- baseline: GET /fleet/v1/discovery, a static document: the same socket, HTTP server, middleware
  and client, but no registry work. list/baseline and start/baseline is the cost of the
  resource's own work per request, independent of how fast this VM and this client are.
Rounds are interleaved (baseline, list, start, ...); the median of ROUNDS is kept. The units
carry `MachineMetadata=role=none`, which no machine has: the engine considers each started unit
and leaves it unplaced, so the figures are the API's, the registry's and the engine's, not
systemd's. fleetd's CPU seconds per request come from /proc/<pid>/stat.

Needs root (a namespaced machine). Writes the block `api` of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_block
from fleetd.model import JobState
from fleetd.registry import EtcdConfig, Registry
from fleetd.sandbox.cluster import Sandbox
from fleetd.unit import parse_unit

QUICK = bool(os.environ.get("BENCH_QUICK"))
UNITS, SECONDS, ROUNDS, WORKERS = (10, 0.5, 1, (1, 4)) if QUICK else (100, 4.0, 3, (1, 16))
UNIT = "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nMachineMetadata=role=none\n"
KINDS = ("baseline", "list", "start")
BASE = "http://fleetd/fleet/v1"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(session: aiohttp.ClientSession, kind: str, workers: int, names: list[str]
               ) -> tuple[int, list[float]]:
    """WORKERS clients sending `kind` requests back to back for SECONDS: (requests, latencies)."""
    latencies: list[float] = []
    end = time.perf_counter() + SECONDS
    desired = ["launched"] * workers

    async def client(k: int) -> None:
        mine = names[k::workers]
        i = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            if kind == "baseline":
                async with session.get(f"{BASE}/discovery") as resp:
                    await resp.read()
                    ok = resp.status == 200
            elif kind == "list":
                async with session.get(f"{BASE}/units") as resp:
                    body = await resp.json()
                    ok = resp.status == 200 and len(body["units"]) == len(names)
            else:
                name = mine[i % len(mine)]
                async with session.put(
                    f"{BASE}/units/{name}", json={"desiredState": desired[k]}
                ) as resp:
                    await resp.read()
                    ok = resp.status == 204
                i += 1
                if i % len(mine) == 0:  # next pass: the other desired state
                    desired[k] = "inactive" if desired[k] == "launched" else "launched"
            if not ok:
                raise RuntimeError(f"{kind}: HTTP {resp.status}")
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client(k) for k in range(workers)))
    return len(latencies), latencies


async def bench(sandbox: Sandbox) -> dict[str, dict[int, dict[str, float]]]:
    state = sandbox.state
    assert state is not None
    config = EtcdConfig(endpoints=[f"127.0.0.1:{state.etcd_port}"], request_timeout=30.0)
    names = [f"api{i:03}.service" for i in range(UNITS)]
    unit = parse_unit(UNIT)
    async with Registry(config) as registry:
        for name in names:
            await registry.create_job(name, unit, JobState.INACTIVE)
    fleetd_pid = state.machines[0].fleetd_pid
    samples: dict[str, dict[int, list[dict[str, float]]]] = {
        kind: {w: [] for w in WORKERS} for kind in KINDS
    }
    socket = str(sandbox.socket_of(state.machines[0]))
    connector = aiohttp.UnixConnector(path=socket, limit=max(WORKERS))
    async with aiohttp.ClientSession(connector=connector) as session:
        await load(session, "baseline", 1, names)  # warm-up: connections, first snapshot
        for _ in range(ROUNDS):
            for workers in WORKERS:
                for kind in KINDS:
                    cpu0, own0 = _cpu_seconds(fleetd_pid), time.process_time()
                    t0 = time.perf_counter()
                    count, lat = await load(session, kind, workers, names)
                    took = time.perf_counter() - t0
                    samples[kind][workers].append({
                        "rate": count / took,
                        "p50": statistics.median(lat),
                        "fleetd_cpu": (_cpu_seconds(fleetd_pid) - cpu0) / count,
                        "client_cpu": (time.process_time() - own0) / count,
                    })
                    print(kind, workers, f"{count / took:.0f} req/s", flush=True)
    return {
        kind: {
            w: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
            for w, runs in by_w.items()
        }
        for kind, by_w in samples.items()
    }


def report(r: dict[str, dict[int, dict[str, float]]]) -> str:
    rows = [
        "| requests | concurrent clients | requests/s | p50 latency | fleetd CPU per request | "
        "ratio to baseline (time per request) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    label = {
        "baseline": "baseline: `GET /fleet/v1/discovery` (static)",
        "list": f"list: `GET /fleet/v1/units` ({UNITS} units)",
        "start": "start: `PUT /fleet/v1/units/NAME` desiredState=launched/inactive",
    }
    for workers in WORKERS:
        base = r["baseline"][workers]["rate"]
        for kind in KINDS:
            f = r[kind][workers]
            ratio = "1.00x" if kind == "baseline" else f"{base / f['rate']:.1f}x"
            rows.append(
                f"| {label[kind]} | {workers} | {f['rate']:,.0f} | {f['p50'] * 1000:.1f} ms | "
                f"{f['fleetd_cpu'] * 1000:.2f} ms | "
                f"{ratio} |"
            )
    top = max(WORKERS)
    return f"""## API under concurrent requests (`bench/api.py`)

{chr(10).join(rows)}

One fleetd (a 1-machine sandbox: API, engine and agent, real etcd), {UNITS} submitted units;
the clients are one asyncio process (aiohttp over the unix socket, keep-alive connections),
each sending its requests back to back for {SECONDS:g} s; median of {ROUNDS} interleaved rounds.
The baseline is the static discovery document through the same socket, server and client: it
is what any request costs here before the resource does any work, so the ratio is the cost of a
list or a start relative to a bare request, measured at the same time on the same machine.
Each start request changes the unit's desired state (launched, then inactive on the next pass);
the units match no machine (`MachineMetadata=role=none`), so the engine considers and leaves
them unplaced and systemd is not involved. With {top} clients, list serves
{r['list'][top]['rate']:,.0f} requests/s ({r['baseline'][top]['rate'] / r['list'][top]['rate']:.1f}x
the baseline's time per request) and start {r['start'][top]['rate']:,.0f} requests/s; the client
process used {r['list'][top]['client_cpu'] * 1000:.2f} ms CPU per list request on the same
{os.cpu_count()} cores (load average at the end {os.getloadavg()[0]:.1f}; other work shares the
VM). There is no numeric goal in issue 11 for these figures.

Reproduce: `make bench` (or `.venv/bin/python bench/api.py`, as root)."""


def main() -> None:
    if os.geteuid() != 0:
        print("bench/api.py needs root (a namespaced systemd machine); skipped")
        return
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="fba-")) / "s")

    async def run() -> dict[str, dict[int, dict[str, float]]]:
        try:
            await sandbox.up(machines=1, agent_ttl=30.0)
            return await bench(sandbox)
        finally:
            await sandbox.down()
            sandbox.dir.parent.rmdir()

    results = asyncio.run(run())
    print(json.dumps(results, indent=1))
    markdown = report(results)
    print(markdown)
    if not QUICK:
        write_block("api", markdown)


if __name__ == "__main__":
    main()
