"""systemd adapter overhead: starting 200 trivial units through `SystemdManager` vs `systemctl`.

One namespaced `systemd --user` machine (sandbox); 200 `sleep` units are written and linked once
(one Reload). Each round then measures, on the same units:
- adapter: 200 concurrent `start_unit` calls until every job has finished (JobRemoved);
- systemctl: one `systemctl --user start` naming all 200 units (it also waits for every job);
- systemctl x200: one `systemctl --user start UNIT` after another (what a shell loop does);
with every unit stopped between measurements. Rounds are interleaved; the median of each is kept.
The headline is adapter / single systemctl (goal ≤ 1.2). Figures go to docs/benchmarks.md,
block `systemd`. Needs root (the machine uses mount namespaces and cgroups).
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_block

from fleetd.sandbox.machine import Machine
from fleetd.systemd import SystemdManager

UNITS = 200
ROUNDS = 5
if os.environ.get("BENCH_QUICK"):  # a smoke run of the script; writes nothing
    UNITS, ROUNDS = 20, 1
UNIT = "[Service]\nExecStart=/bin/sleep infinity\n"


async def systemctl(machine: Machine, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "systemctl", "--user", *args, env=machine.env(), stdout=asyncio.subprocess.DEVNULL
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"systemctl {args[:2]} failed")


async def timed(coro_factory) -> float:
    t0 = time.perf_counter()
    await coro_factory()
    return time.perf_counter() - t0


async def run() -> dict[str, list[float]]:
    names = [f"bench{i:03}.service" for i in range(UNITS)]
    figures: dict[str, list[float]] = {"adapter": [], "systemctl": [], "systemctl_each": []}
    with tempfile.TemporaryDirectory(prefix="bench-systemd-") as tmp:
        async with Machine(f"bench{os.getpid() % 100000}") as machine:
            config = machine.systemd_config(units_dir=Path(tmp) / "units")
            async with SystemdManager(config) as mgr:
                await mgr.load_many(dict.fromkeys(names, UNIT))
                assert mgr.reload_count == 0  # new units are linked, with no reload

                async def adapter() -> None:
                    results = await asyncio.gather(*(mgr.start_unit(n) for n in names))
                    assert set(results) == {"done"}, set(results)

                async def one_systemctl() -> None:
                    await systemctl(machine, "start", *names)

                async def each_systemctl() -> None:
                    for n in names:
                        await systemctl(machine, "start", n)

                async def stop_all() -> None:
                    await systemctl(machine, "stop", *names)

                for _ in range(ROUNDS):
                    for key, fn in (("adapter", adapter), ("systemctl", one_systemctl),
                                    ("systemctl_each", each_systemctl)):
                        figures[key].append(await timed(fn))
                        running = sum(
                            s.sub == "running" for s in (await mgr.states()).values()
                        )
                        assert running == UNITS, (key, running)
                        await stop_all()
    return figures


def report(figures: dict[str, list[float]]) -> str:
    med = {k: statistics.median(v) for k, v in figures.items()}
    ratio = med["adapter"] / med["systemctl"]
    ratio_each = med["adapter"] / med["systemctl_each"]
    verdict = "meets" if ratio <= 1.2 else "misses"
    per_round = [a / b for a, b in zip(figures["adapter"], figures["systemctl"], strict=True)]
    load = os.getloadavg()[0]
    return "\n".join([
        "## systemd adapter: start 200 trivial units",
        "",
        f"**adapter / `systemctl --user start` (all 200 in one call): {ratio:.2f}** "
        f"({verdict} the goal of ≤ 1.2).",
        "",
        f"Median of {ROUNDS} interleaved rounds, one namespaced `systemd --user` machine, "
        f"{UNITS} linked `sleep` units, all stopped between measurements; every figure ends when "
        "all 200 start jobs have finished (units active/running). Per-round ratios: "
        f"{min(per_round):.2f} to {max(per_round):.2f}; load average at the end: {load:.1f} "
        "(other work on the VM widens the spread).",
        "",
        "| how | median | ratio adapter / this |",
        "|---|---|---|",
        f"| adapter: 200 concurrent `start_unit` (JobRemoved) | {med['adapter']:.3f} s | 1.00 |",
        f"| one `systemctl --user start` of all 200 | {med['systemctl']:.3f} s | {ratio:.2f} |",
        f"| 200 x `systemctl --user start UNIT`, one after another | "
        f"{med['systemctl_each']:.3f} s | {ratio_each:.2f} |",
    ])


def main() -> None:
    if os.geteuid() != 0:
        print("bench/systemd.py needs root (namespaced systemd machines); skipped")
        return
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures = uvloop.run(run())
    markdown = report(figures)
    print(markdown)
    write_block("systemd", markdown)


if __name__ == "__main__":
    main()
