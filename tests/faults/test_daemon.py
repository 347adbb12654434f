"""The daemon's edges: bad configuration refused in one clear line; 100 concurrent API clients.

The configuration cases run the real `fleetd` entry point (they exit before touching etcd or
systemd). The concurrency case runs 100 threads of the stdlib client (what fleetctl uses)
against the API sockets of a real 2-machine sandbox.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fleetd.api.client import Client
from tests.faults.harness import BIN, Cluster, report, start_units

CLIENTS = 100
MACHINES = 2  # the sandbox of `cluster` (tests/faults/harness.py)


def _fleetd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.run(
        [BIN / "fleetd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "config", "names"),
    [
        # an unknown flag: click's usage lines, then one error line naming it
        (["--bogus"], {}, None, "--bogus"),
        # a malformed duration in the environment names the variable and the value
        ([], {"FLEET_AGENT_TTL": "soon"}, None, "FLEET_AGENT_TTL"),
        # a line of the config file that is not name=value names the file and line
        ([], {}, "agent_ttl=10s\nthis is not an option\n", ":2:"),
        # an unknown option in the config file names it
        ([], {}, "agent_tll=10s\n", "agent_tll"),
        # a malformed flag value names the flag
        (["--agent-ttl=-1"], {}, None, "--agent-ttl"),
    ],
    ids=[
        "unknown-flag",
        "bad-env-duration",
        "bad-config-line",
        "unknown-config-option",
        "bad-flag-value",
    ],
)
def test_bad_configuration_exits_nonzero_with_one_clear_line(
    tmp_path: Path, args: list[str], env: dict[str, str], config: str | None, names: str
) -> None:
    if config is not None:
        path = tmp_path / "fleet.conf"
        path.write_text(config)
        args = ["--config", str(path), *args]
    done = _fleetd(*args, env=env)
    assert done.returncode != 0
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if names in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(("fleetd: configuration error: ", "Error: ")), errors[0]


@pytest.mark.root
async def test_100_concurrent_clients_list_units_without_error(cluster: Cluster) -> None:
    names = [cluster.write_unit(f"busy-{i}.service") for i in range(5)]
    async with cluster.registry() as registry:
        await start_units(cluster, registry, names)
    endpoints = [f"unix://{cluster.sandbox.socket_of(r)}" for r in cluster.state.machines]
    start = threading.Barrier(CLIENTS)
    errors: list[BaseException] = []
    listed: list[set[str]] = []

    def one_client(i: int) -> None:
        client = Client(endpoints[i % len(endpoints)], timeout=30.0)
        try:
            start.wait(30)
            units = client.units()  # what fleetctl list-units reads: units, then states
            states = client.states()
            listed.append({u["name"] for u in units} & {s["name"] for s in states})
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(CLIENTS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    took = time.monotonic() - began
    assert errors == []
    assert len(listed) == CLIENTS
    assert all(found >= set(names) for found in listed)
    report(
        "100 concurrent clients",
        f"{CLIENTS} list-units (units + states) over {len(endpoints)} sockets, 0 errors, "
        f"{took:.2f}s for all",
    )


@pytest.mark.root
async def test_100_concurrent_fleetctl_processes_without_error(cluster: Cluster) -> None:
    """The real fleetctl entry point, 100 processes at once over the 3 machines' sockets:
    list-units, list-unit-files and list-machines, each exiting 0 with complete output."""
    names = [cluster.write_unit(f"proc-{i}.service") for i in range(3)]
    async with cluster.registry() as registry:
        await start_units(cluster, registry, names)
    commands = ("list-units", "list-unit-files", "list-machines")
    machines = [r.name for r in cluster.state.machines]

    async def one(i: int) -> tuple[str, int, str, str]:
        command, machine = commands[i % 3], machines[i % len(machines)]
        env = dict(
            os.environ,
            FLEETCTL_ENDPOINT=f"unix://{cluster.sandbox.socket_of(cluster.machine(machine))}",
        )
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "fleetctl"), "--request-timeout", "30", command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await proc.communicate()
        return command, proc.returncode or 0, out.decode(), err.decode()

    began = time.monotonic()
    async with asyncio.timeout(120):  # a bound against hanging, not a speed goal
        results = await asyncio.gather(*(one(i) for i in range(CLIENTS)))
    took = time.monotonic() - began
    failed = [(c, rc, err) for c, rc, _, err in results if rc != 0 or err]
    assert failed == []
    for command, _, out, _ in results:
        if command == "list-machines":
            assert len(out.splitlines()) == 1 + len(machines)  # the legend, one line each
        else:
            assert all(name in out for name in names), (command, out)
    report(
        "100 concurrent fleetctl processes",
        f"{CLIENTS} real fleetctl runs (list-units, list-unit-files, list-machines) over "
        f"{len(machines)} sockets, 0 errors, {took:.2f}s for all",
    )
