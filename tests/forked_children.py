"""A process shaped like fleetd for the fork tests: uvloop, an etcd watch open through the
Registry, and children started the way fleetd starts them (`asyncio.create_subprocess_exec`,
which uvloop's libuv does with a real fork()). Run as a script by tests that need a fresh
process (its own gRPC and event loop, through `run_forked_children`), it prints one JSON line:

    forked_children.py ETCD_ENDPOINT true N
        starts `true` N times: {"statuses": {"<exit status>": count}} (a negative status is the
        signal that killed a child, as asyncio reports it)
    forked_children.py ETCD_ENDPOINT journal N UNIT TEXT MACHINE MACHINE_ID ROOT SYSTEMD_PID
        reads UNIT's last 10 journal lines N times with JournalStream, through the namespaced
        machine (fleetd.sandbox.machine) whose systemd runs as SYSTEMD_PID: {"reads": N,
        "without_text": how many of them did not show TEXT}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from fleetd.registry import EtcdConfig, Registry
from fleetd.sandbox.machine import Machine
from fleetd.systemd import JournalStream
from fleetd.unit import parse_unit


async def started_children(count: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    for _ in range(count):
        proc = await asyncio.create_subprocess_exec("true")
        statuses[await proc.wait()] += 1
    return {"statuses": {str(status): n for status, n in sorted(statuses.items())}}


async def journal_reads(count: int, unit: str, text: str, machine: Machine) -> dict[str, object]:
    config = machine.systemd_config()
    without = 0
    for _ in range(count):
        async with JournalStream(unit, lines=10, wrap=config.wrap, env=config.env) as lines:
            shown = [line async for line in lines]
        without += not any(text in line for line in shown)
    return {"reads": count, "without_text": without}


async def with_a_watch(endpoint: str, work: Callable[[], Awaitable[dict[str, object]]]) -> None:
    """Run `work` while a watch stream is open on etcd, as fleetd always has one (it is open
    once it has delivered the write made for it)."""
    config = EtcdConfig(endpoints=[endpoint], key_prefix=f"/fork-{uuid.uuid4().hex[:12]}/")
    async with Registry(config) as registry:
        snapshot = await registry.snapshot()
        live = asyncio.Event()

        async def follow() -> None:
            async with registry.watch(snapshot.revision + 1) as events:
                async for _ in events:
                    live.set()

        watching = asyncio.ensure_future(follow())
        try:
            await registry.create_job(
                "fork.service", parse_unit("[Service]\nExecStart=/bin/true\n")
            )
            await asyncio.wait_for(live.wait(), 10.0)
            result = await work()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
    print(json.dumps(result), flush=True)


def run_forked_children(*args: str, within: float = 120.0) -> dict[str, Any]:
    """Run this script with `args` in a process of its own (session and group too) and return
    what it printed. A helper stuck longer than `within` (a child hung between its fork and its
    exec blocks uvloop's spawn, so the whole loop) is killed with its group, and that fails."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its group: the helper and its stuck child
        proc.communicate()
        raise AssertionError(f"{args}: stuck for {within:g} s") from None
    assert proc.returncode == 0, f"{args}: exit status {proc.returncode}\n{err}"
    return json.loads(out.splitlines()[-1])


def main(argv: list[str]) -> None:
    endpoint, what, count = argv[0], argv[1], int(argv[2])
    if what == "true":
        uvloop.run(with_a_watch(endpoint, lambda: started_children(count)))
    elif what == "journal":
        unit, text, name, machine_id, root, pid = argv[3:9]
        machine = Machine(name, machine_id, root=Path(root)).attach(int(pid))
        uvloop.run(with_a_watch(endpoint, lambda: journal_reads(count, unit, text, machine)))
    else:
        raise SystemExit(f"unknown work {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
