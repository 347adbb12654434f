"""Ten times the scale: 10,000 machines and 100,000 units on a real etcd, on this machine.

Three real fleetds (a sandbox: namespaced systemd machines, their agents, API and engines) and
10,000 simulated machines (one process: registered under one lease, following the key range a
real agent follows — the units placed on them, `placed/<machine>/…`, here the union of their
ranges — and publishing each placed unit's state, active/running, as a burst per watch batch,
100 per txn, as a real agent publishes). The units ask for `MachineMetadata=role=sim`, so every
one lands on a simulated machine and neither real fleetd holds any.

Measured, from the first API request:
- submit: 100,000 units (`desiredState: launched`) through the API's batch endpoint
  (`POST x/units`, fleetctl's client: batches of at most 100 requests and 512 KiB, 16 in
  flight) of a fleetd that does not lead the engines (as fleetctl talks to its own machine's);
- placed: every unit's copy on its machine seen by the simulated machines; converged: every
  state published (acknowledged by etcd);
- etcd writes per unit (store revisions), etcd's database size;
- the engine leader's fleetd: CPU seconds and RSS (VmRSS) before and after, per unit;
- the third fleetd (not the leader, serving nothing, no unit of its own): its CPU seconds
  while the cluster converges, as a share of one core, and its RSS after against its idle RSS;
- baseline of the same run: the same number of raw etcd puts (one client, 64 in flight).

Needs root (namespaced machines). Writes the block `scale` of docs/benchmarks.md;
`BENCH_QUICK=1`: 200 machines and 2,000 units, nothing written.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_block
from fleetd import logs
from fleetd.api.client import Client
from fleetd.model import Assignment, Machine, UnitState
from fleetd.registry import Changed, EtcdConfig, KeyKind, Registry
from fleetd.sandbox.cluster import Sandbox

MACHINES, UNITS = 10_000, 100_000
QUICK = bool(os.environ.get("BENCH_QUICK"))
if QUICK:
    MACHINES, UNITS = 200, 2_000
PROBE = "BENCH_UNITS" in os.environ  # another size, to look at: nothing written
MACHINES = int(os.environ.get("BENCH_MACHINES", MACHINES))
UNITS = int(os.environ.get("BENCH_UNITS", UNITS))
LEASE_TTL = 60
RAW_CONCURRENCY = 64
SIM_META = {"role": "sim"}
UNIT_OPTIONS = [
    {"section": "Service", "name": "ExecStart", "value": "/bin/sleep infinity"},
    {"section": "X-Fleet", "name": "MachineMetadata", "value": "role=sim"},
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def etcd_metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the simulated machines (a process of their own) -----------------------------------------
async def simulate(endpoint: str) -> None:
    """Register MACHINES machines under one lease, say `ready`, follow the copies placed on
    them and publish each unit's state; print when the last copy came and the last state was
    published (time.monotonic, the same clock in every process), then stop at stdin's end."""
    config = EtcdConfig(endpoints=[endpoint], request_timeout=30.0)
    loop = asyncio.get_running_loop()
    async with Registry(config) as registry:
        etcd, keys = registry.etcd, registry.keys
        lease_id, _ = await etcd.grant(LEASE_TTL)

        async def keep() -> None:
            while True:
                await asyncio.sleep(LEASE_TTL / 3)  # a lease keep-alive timer, not a poll
                await etcd.keep_alive_once(lease_id)

        keeper = asyncio.create_task(keep())
        sem = asyncio.Semaphore(200)

        async def register(i: int) -> None:
            machine = Machine(f"{i:032x}", f"10.{i // 62500}.{i // 250 % 250}.{i % 250}",
                              SIM_META)  # fmt: skip
            async with sem:
                await etcd.put(keys.machine(machine.id), machine.encode(), lease_id)

        await asyncio.gather(*(register(i) for i in range(MACHINES)))
        revision = (await registry.snapshot()).revision
        print("ready", flush=True)
        placed: set[str] = set()
        published = 0
        last_placed = last_published = 0.0
        pending: asyncio.Queue[list[UnitState]] = asyncio.Queue()

        class _Lease:
            id = lease_id

        async def publisher() -> None:
            nonlocal published, last_published
            while True:
                states = await pending.get()
                await registry.publish_states(states, _Lease)  # type: ignore[arg-type]
                published += len(states)
                if published >= UNITS:
                    last_published = time.monotonic()
                    print(json.dumps({"placed_at": last_placed, "converged_at": last_published}),
                          flush=True)  # fmt: skip

        async def follow() -> None:
            nonlocal last_placed
            ranges = [(keys.of_kind(KeyKind.PLACED), True)]
            async with registry.watch(revision + 1, ranges=ranges) as events:
                async for batch in events.batches():
                    states = []
                    for event in batch:
                        if not isinstance(event, Changed) or event.doc.name in placed:
                            continue
                        a: Assignment = event.doc
                        placed.add(a.name)
                        states.append(UnitState(a.name, a.machine_id, a.unit_hash, "loaded",
                                                "active", "running"))  # fmt: skip
                    if len(placed) >= UNITS and not last_placed:
                        last_placed = time.monotonic()
                    for start in range(0, len(states), 100):
                        pending.put_nowait(states[start : start + 100])

        tasks = [asyncio.create_task(follow())]
        tasks += [asyncio.create_task(publisher()) for _ in range(16)]
        await loop.run_in_executor(None, sys.stdin.readline)  # EOF: the bench is done
        for task in (*tasks, keeper):
            task.cancel()
        await asyncio.gather(*tasks, keeper, return_exceptions=True)
        await etcd.revoke(lease_id)
    print(json.dumps({"cpu": time.process_time()}), flush=True)


# --- the bench ---------------------------------------------------------------------------------
async def bench(sandbox: Sandbox) -> dict[str, float]:
    state = sandbox.state
    assert state is not None
    config = sandbox.etcd_config(request_timeout=30.0)
    async with Registry(config) as registry:
        leader = await registry.leader()
        assert leader is not None
        by_id = {m.id: m for m in state.machines}
        lead = by_id[leader.machine_id]
        # the machine fleetctl is pointed at serves the submission; the third one only runs
        api, other = (m for m in state.machines if m.id != leader.machine_id)
        r: dict[str, float] = {
            "idle_rss": rss_mib(other.fleetd_pid),
            "leader_rss0": rss_mib(lead.fleetd_pid),
        }
        sims = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--simulate", state.etcd_url.removeprefix("http://"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert sims.stdin is not None and sims.stdout is not None
        assert (await sims.stdout.readline()).strip() == b"ready"
        await asyncio.sleep(5)  # the fleetds take the 10,000 machines in; then measure from rest
        r["idle_rss_machines"] = rss_mib(other.fleetd_pid)
        spy = None
        if os.environ.get("BENCH_PYSPY"):  # profile the leader's fleetd while it works
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw", "-r", "50",
                "-o", os.environ["BENCH_PYSPY"], "--pid", str(lead.fleetd_pid),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        rev0 = (await registry.snapshot()).revision
        puts0 = etcd_metric(state.etcd_url, "etcd_mvcc_put_total")
        cpu_other0, cpu_lead0 = cpu_seconds(other.fleetd_pid), cpu_seconds(lead.fleetd_pid)
        cpu_api0, cpu_etcd0 = cpu_seconds(api.fleetd_pid), cpu_seconds(state.etcd_pid)
        client = Client(sandbox.endpoint(api), timeout=120.0)
        units = [
            {"name": f"s{i}.service", "desiredState": "launched", "options": UNIT_OPTIONS}
            for i in range(UNITS)
        ]
        t0 = time.monotonic()
        errors = await asyncio.to_thread(client.put_units, units)
        r["submit"] = time.monotonic() - t0
        assert not any(errors), [e for e in errors if e][:3]
        done = json.loads(await asyncio.wait_for(sims.stdout.readline(), 600))
        r["placed"] = done["placed_at"] - t0
        r["converged"] = done["converged_at"] - t0
        if spy is not None:
            spy.send_signal(2)
            await spy.wait()
        window = done["converged_at"] - t0
        r["other_cpu"] = cpu_seconds(other.fleetd_pid) - cpu_other0
        r["other_cpu_share"] = r["other_cpu"] / window
        r["leader_cpu"] = cpu_seconds(lead.fleetd_pid) - cpu_lead0
        r["api_cpu"] = cpu_seconds(api.fleetd_pid) - cpu_api0
        r["etcd_cpu"] = cpu_seconds(state.etcd_pid) - cpu_etcd0
        r["after_submit"] = done["converged_at"] - t0 - r["submit"]
        r["writes"] = ((await registry.snapshot()).revision - rev0) / UNITS
        r["puts"] = (etcd_metric(state.etcd_url, "etcd_mvcc_put_total") - puts0) / UNITS
        await asyncio.sleep(5)  # the leader's last plans after the last state
        r["other_rss"] = rss_mib(other.fleetd_pid)
        r["leader_rss"] = rss_mib(lead.fleetd_pid)
        r["db_mib"] = etcd_metric(state.etcd_url, "etcd_mvcc_db_total_size_in_bytes") / 2**20
        sims.stdin.close()
        out = json.loads((await asyncio.wait_for(sims.stdout.readline(), 120)) or b"{}")
        await asyncio.wait_for(sims.wait(), 60)
        r["sims_cpu"] = out.get("cpu", -1.0)

        etcd = registry.etcd
        raw_sem = asyncio.Semaphore(RAW_CONCURRENCY)

        async def put(i: int) -> None:
            async with raw_sem:
                await etcd.put(f"/bench-raw/{i}", b"x" * 60)

        t0 = time.monotonic()
        await asyncio.gather(*(put(i) for i in range(UNITS)))
        r["raw"] = time.monotonic() - t0
        await etcd.delete("/bench-raw/", prefix=True)
    return r


def report(r: dict[str, float]) -> str:
    per_unit_kib = (r["leader_rss"] - r["leader_rss0"]) * 1024 / UNITS
    rows = [
        "| measure | fleetd | baseline (same run) | ratio | goal |",
        "|---|---|---|---|---|",
        f"| submit {UNITS:,} units through the API's batch endpoint (`POST x/units`, fleetctl's "
        f"client) of a fleetd that does not lead | {r['submit']:.1f} s | {UNITS:,} raw etcd "
        f"puts, 64 in flight: {r['raw']:.1f} s "
        f"| {r['submit'] / r['raw']:.2f}x | bounded |",
        f"| first request → all {UNITS:,} placed on {MACHINES:,} simulated machines (their copies "
        f"seen) | {r['placed']:.1f} s | | | |",
        f"| first request → all converged (every state published) | {r['converged']:.1f} s | "
        f"{UNITS:,} raw etcd puts: {r['raw']:.1f} s | {r['converged'] / r['raw']:.2f}x | < 60 s |",
        f"| last API answer → all converged | {r['after_submit']:.1f} s | | | |",
        f"| etcd writes per unit (store revisions, each a committed txn: submit 50 jobs per txn, "
        f"placements 100 per txn with their copies, states 100 per txn) | {r['writes']:.3f} | | "
        f"| ≤ 2.1 |",
        f"| keys written per unit (etcd_mvcc_put_total: job, its copy, placement, state; the "
        f"shared content) | {r['puts']:.2f} | | | |",
        f"| the fleetd that is not the leader (no unit of its own): CPU while the cluster "
        f"converges | {r['other_cpu']:.2f} CPU s over {r['converged']:.1f} s = "
        f"**{100 * r['other_cpu_share']:.2f}%** of a core | | | < 5% |",
        f"| same fleetd: RSS after, against its idle RSS | {r['other_rss']:.1f} MiB | idle "
        f"{r['idle_rss']:.1f} MiB (with the {MACHINES:,} machines: "
        f"{r['idle_rss_machines']:.1f} MiB) | {r['other_rss'] / r['idle_rss']:.2f}x | ≤ 1.2x |",
        f"| the engine leader's fleetd (engine and agent): CPU from the first request to "
        f"convergence | {r['leader_cpu']:.1f} CPU s | | | reported |",
        f"| the fleetd serving the submission (API and agent): CPU, same span | "
        f"{r['api_cpu']:.1f} CPU s | | | |",
        f"| etcd: CPU, same span | {r['etcd_cpu']:.1f} CPU s | | | |",
        f"| same fleetd: RSS before → after | {r['leader_rss0']:.0f} → {r['leader_rss']:.0f} MiB "
        f"({per_unit_kib:.1f} KiB per unit) | | | reported |",
        f"| etcd database size after | {r['db_mib']:.0f} MiB | | | reported |",
        f"| the simulated machines' process: CPU | {r['sims_cpu']:.1f} CPU s | | | |",
    ]
    return "\n".join(
        [
            "## Ten times the scale (`bench/scale.py`)",
            "",
            *rows,
            "",
            f"- Three real fleetds (a sandbox: one leads the engines, one serves the"
            f" submission, one only runs) and {MACHINES:,} simulated machines registered under"
            " one lease in one process, which follows the range of copies placed on them"
            " (`placed/`) and publishes a burst of states per watch batch, 100 per txn, as an"
            " agent does. The units ask `MachineMetadata=role=sim`: none lands on a real"
            " machine. Everything — etcd, both fleetds, the simulated machines, the client —"
            " shares the 2 cores.",
            "- The engine places while the units are being submitted; placed and converged are"
            " timed from the first API request.",
            "",
            "Reproduce: `make bench` (or `.venv/bin/python bench/scale.py`, as root).",
        ]
    )


def main() -> None:
    logs.configure(0, json=True, stream=open("/dev/null", "w"))
    if sys.argv[1:2] == ["--simulate"]:
        asyncio.run(simulate(sys.argv[2]))
        return
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="fbs-")) / "s")
    try:
        asyncio.run(sandbox.up(machines=3, agent_ttl=30.0))
        r = asyncio.run(bench(sandbox))
    finally:
        keep = os.environ.get("BENCH_KEEP_LOGS")  # a directory for the fleetds' logs
        if keep and sandbox.state is not None:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for m in sandbox.state.machines:
                shutil.copy(sandbox.dir / m.name / "fleetd.log", Path(keep) / f"{m.name}.log")
        asyncio.run(sandbox.down())
        sandbox.dir.parent.rmdir()
    print(json.dumps(r, indent=1))
    markdown = report(r)
    print(markdown)
    if not PROBE:
        write_block("scale", markdown)


if __name__ == "__main__":
    main()
