"""Rolling updates on a real 6-machine sandbox: how long a rollout of a Global unit takes
against what its policy makes it cost at least.

The baseline, measured in the same run on the same machines: a raw `systemctl restart` of the
same unit inside each machine (R, the median), so a rollout of B batches, each restarted and
then healthy for `UpdateMinHealthyTime` (H), cannot take less than B x (R + H). The figure is
the rollout's time — from `fleetctl start --replace` to its exit, once every machine runs the
new version — as a ratio of that floor (the acceptance asked for at most 1.5x), for
`UpdateMaxParallel` 1, 2 and 3. Also: how long a broken version takes to be back everywhere
on the previous one (`ExecStart=/bin/false`, auto-revert).

Needs root (namespaced machines). Writes the block `rollout` of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_block
from fleetd.registry import Snapshot
from tests.faults.harness import Cluster, sandbox_up

QUICK = bool(os.environ.get("BENCH_QUICK"))
MACHINES = 6
UNIT = "bench-roll.service"
MIN_HEALTHY = 2.0
PARALLEL = (2,) if QUICK else (1, 2, 3)
TEXT = """[Service]
ExecStartPre=/bin/sleep 0.1
ExecStart=/bin/sh -c 'echo {version}; exec sleep infinity'

[X-Fleet]
Global=true
UpdateMaxParallel={parallel}
UpdateMinHealthyTime={healthy:g}s
UpdateHealthyDeadline=30s
"""


def runs(unit_hash: str, ids: list[str]):  # type: ignore[no-untyped-def]
    def check(snapshot: Snapshot) -> bool:
        return all(
            (s := snapshot.states.get((UNIT, m))) is not None
            and s.hash == unit_hash
            and s.active == "active"
            for m in ids
        )

    return check


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        directory = Path(tmp) / "sandbox"
        with sandbox_up(directory, machines=MACHINES, agent_ttl=5.0):
            cluster = Cluster(directory, 5.0)
            ids = sorted(r.id for r in cluster.state.machines)
            rows = []
            version = 0

            def write(parallel: int, broken: bool = False) -> None:
                nonlocal version
                version += 1
                text = TEXT.format(version=version, parallel=parallel, healthy=MIN_HEALTHY)
                if broken:
                    text = text.replace("ExecStart=/bin/sh -c", "ExecStart=/bin/false\n#")
                cluster.write_unit(UNIT, text)

            async with cluster.registry() as registry:
                write(PARALLEL[0])
                cluster.fleetctl("m1", "start", UNIT)
                snapshot = await registry.snapshot()
                await asyncio.wait_for(
                    registry.wait_for(runs(snapshot.jobs[UNIT].unit_hash, ids)), 60
                )
                restarts = []
                for record in cluster.state.machines:
                    started = time.monotonic()
                    done = cluster.run_in(record.name, "systemctl", "restart", UNIT)
                    assert done.returncode == 0, done.stderr
                    restarts.append(time.monotonic() - started)
                raw = statistics.median(restarts)
                for parallel in PARALLEL:
                    write(parallel)
                    started = time.monotonic()
                    done = cluster.fleetctl("m1", "start", "--replace", UNIT)
                    took = time.monotonic() - started
                    batches = math.ceil(MACHINES / parallel)
                    floor = batches * (raw + MIN_HEALTHY)
                    rows.append((parallel, batches, took, floor))
                    print(f"UpdateMaxParallel={parallel}: {took:.1f} s, floor {floor:.1f} s")
                write(PARALLEL[-1], broken=True)
                before = (await registry.snapshot()).jobs[UNIT].unit_hash
                started = time.monotonic()
                failed = cluster.fleetctl("m1", "start", "--replace", UNIT, check=False)
                assert f"Error rolling out {UNIT}" in failed.stderr, failed.stderr
                print(failed.stderr.splitlines()[-1])
                await asyncio.wait_for(registry.wait_for(runs(before, ids)), 60)
                reverted = time.monotonic() - started
    lines = [
        "## Rolling updates (`bench/rollout.py`)",
        "",
        f"A Global unit on {MACHINES} sandbox machines, `UpdateMinHealthyTime={MIN_HEALTHY:g}s`. "
        "Baseline, same run: a raw `systemctl restart` of the unit inside each machine "
        f"(median {raw * 1000:.0f} ms); a rollout of B batches cannot take less than "
        "B x (restart + healthy time).",
        "",
        "| UpdateMaxParallel | batches | rollout (fleetctl start --replace) | floor B x (R + H) "
        "| ratio |",
        "|---|---|---|---|---|",
    ]
    for parallel, batches, took, floor in rows:
        lines.append(
            f"| {parallel} | {batches} | {took:.1f} s | {floor:.1f} s | {took / floor:.2f}x |"
        )
    lines += [
        "",
        f"A broken version (`ExecStart=/bin/false`, UpdateMaxParallel={PARALLEL[-1]}): every "
        f"machine back on the previous one {reverted:.1f} s after the submit "
        f"({reverted / (raw + MIN_HEALTHY):.1f}x one batch's floor; the failure is judged at "
        "once, systemd having given up, and the touched machines restart the previous version).",
    ]
    write_block("rollout", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
