"""`make demo`: the seed walkthrough (examples/seed) on a real 3-machine sandbox, narrated.

Each step shows the command and what it printed. The units are the walkthrough's, made
docker-free: hello.service is a /bin/sh loop printing Hello World, apache@.service serves HTTP
with Python's http.server (ready once it listens); plus a Global unit and a MachineMetadata unit;
then a machine is killed and its unit comes up elsewhere. `--keep` leaves the sandbox running
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fleetd.model import short_id

HELLO = """[Unit]
Description=Hello World

[Service]
ExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'
"""
# Type=notify: the server tells systemd READY=1 once it listens, so `fleetctl start` (which waits
# for active) returns when the port answers; with `python3 -m http.server` (Type=simple) it
# returned at the fork, and the walkthrough's GET right after could come before the bind.
SERVE = (
    "import http.server as h, os, socket, sys; "
    's = h.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), h.SimpleHTTPRequestHandler); '
    "n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
    'n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"]); '
    "s.serve_forever()"
)
APACHE = f"""[Unit]
Description=Fake Apache instance %i

[Service]
Type=notify
ExecStart=/usr/bin/python3 -c '{SERVE}' %i

[X-Fleet]
X-Conflicts=apache@*.service
"""
GLOBAL = """[Unit]
Description=Global unit on every machine

[Service]
ExecStart=/bin/sh -c 'while true; do sleep 60; done'

[X-Fleet]
Global=true
"""
# v2 of the Global unit, rolled out a machine at a time (docs/rolling-updates.md)
GLOBAL_V2 = GLOBAL.replace("sleep 60", "sleep 30") + "UpdateMinHealthyTime=1s\n"
DBONLY = """[Unit]
Description=Only on role=db machines

[Service]
ExecStart=/bin/sh -c 'while true; do sleep 60; done'

[X-Fleet]
MachineMetadata=role=db
"""
PORTS = (5555, 6666, 7777)


@dataclass
class Step:
    argv: list[str]
    code: int
    out: str
    err: str


@dataclass
class Walkthrough:
    """Runs commands as a user would (real processes), in a work directory of unit files."""

    workdir: Path
    env: dict[str, str]
    show: Callable[[str], None] = print
    steps: list[Step] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.show(f"\n### {text}")

    def run(self, *argv: str, check: bool = True) -> Step:
        self.show(f"$ {' '.join(shlex.quote(a) for a in argv)}")
        bin_dir = Path(sys.executable).parent
        cmd = [str(bin_dir / argv[0]) if (bin_dir / argv[0]).exists() else argv[0], *argv[1:]]
        proc = subprocess.run(
            cmd,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        for text in (proc.stdout, proc.stderr):
            if text:
                self.show(text.rstrip("\n"))
        step = Step(list(argv), proc.returncode, proc.stdout, proc.stderr)
        self.steps.append(step)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed with exit code {proc.returncode}")
        return step


def write_units(workdir: Path) -> None:
    (workdir / "hello.service").write_text(HELLO)
    (workdir / "global.service").write_text(GLOBAL)
    (workdir / "dbonly.service").write_text(DBONLY)
    templates, instances = workdir / "templates", workdir / "instances"
    templates.mkdir()
    instances.mkdir()
    (templates / "apache@.service").write_text(APACHE)
    for port in PORTS:
        (instances / f"apache@{port}.service").symlink_to("../templates/apache@.service")


def machine_of(step: Step, unit: str) -> str:
    """The full machine ID in `list-units --full --no-legend --fields unit,machine` output."""
    for line in step.out.splitlines():
        cols = line.split()
        if cols and cols[0] == unit:
            return cols[1].split("/")[0]
    raise RuntimeError(f"{unit} is not in list-units")


def walkthrough(w: Walkthrough, sandbox_dir: Path) -> None:
    fleetctl = "fleetctl"
    w.say("hello.service: submit, inspect, load, start, look, stop, unload, destroy")
    w.run(fleetctl, "list-machines")
    w.run(fleetctl, "submit", "hello.service")
    w.run(fleetctl, "list-unit-files")
    w.run(fleetctl, "cat", "hello")
    w.run(fleetctl, "load", "hello.service")
    w.run(fleetctl, "list-unit-files")
    w.run(fleetctl, "list-units")
    w.run(fleetctl, "start", "hello")
    w.run(fleetctl, "list-unit-files")
    w.run(fleetctl, "list-units")
    w.run(fleetctl, "status", "hello")
    w.run(fleetctl, "journal", "--lines", "3", "hello")
    w.run(fleetctl, "stop", "hello")
    w.run(fleetctl, "list-unit-files")
    w.run(fleetctl, "unload", "hello")
    w.run(fleetctl, "list-unit-files")
    w.run(fleetctl, "destroy", "hello")
    w.run(fleetctl, "list-unit-files")

    w.say("apache@.service: a template, instances as symlinks, X-Conflicts spreads them")
    w.run("ls", "-l", "instances")
    w.run(
        fleetctl,
        "start",
        *sorted(f"instances/{p.name}" for p in (w.workdir / "instances").iterdir()),
    )
    w.run(fleetctl, "list-units")
    for port in PORTS:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            w.show(f"GET http://127.0.0.1:{port}/ -> HTTP {resp.status}")

    w.say("a Global unit runs on every machine; a MachineMetadata unit on the role=db machine")
    w.run(fleetctl, "start", "global.service", "dbonly.service")
    # as fleet's, `start` does not wait for a Global unit: wait until every machine runs it
    asyncio.run(wait_active_on(sandbox_dir, "global.service", machines=3))
    w.run(fleetctl, "list-units")
    w.run(fleetctl, "list-unit-files")

    w.say("a rolling update: v2 of the Global unit, one machine at a time, each healthy first")
    (w.workdir / "global.service").write_text(GLOBAL_V2)
    w.run(fleetctl, "start", "--replace", "global.service")
    w.run(fleetctl, "rollout", "status", "--no-block", "global.service")

    w.say("failover: the machine running hello.service dies; the unit comes up elsewhere")
    w.run(fleetctl, "start", "hello.service")
    where = machine_of(
        w.run(fleetctl, "list-units", "--full", "--no-legend", "--fields", "unit,machine"),
        "hello.service",
    )
    started = time.monotonic()
    w.run("fleetd", "sandbox", "kill", "--dir", str(sandbox_dir), where)
    moved = asyncio.run(wait_moved(sandbox_dir, "hello.service", where))
    elapsed = time.monotonic() - started
    w.show(f"hello.service active on {short_id(moved)}... {elapsed:.1f}s after its machine died")
    if f"/{_sandbox_name(sandbox_dir, where)}/" in w.env["FLEETCTL_ENDPOINT"]:
        survivor = _sandbox_name(sandbox_dir, moved)
        w.env["FLEETCTL_ENDPOINT"] = f"unix://{sandbox_dir}/{survivor}/fleet.sock"
        w.show(f"(fleetctl talked to the dead machine: now to {survivor})")
        w.show(f"$ export FLEETCTL_ENDPOINT={w.env['FLEETCTL_ENDPOINT']}")
    w.run(fleetctl, "list-units")
    w.run(fleetctl, "list-machines")


def _sandbox_name(sandbox_dir: Path, machine_id: str) -> str:
    from fleetd.sandbox.cluster import Sandbox

    return Sandbox(sandbox_dir).find(machine_id).name


def _etcd_config(sandbox_dir: Path):  # type: ignore[no-untyped-def]
    from fleetd.registry import EtcdConfig
    from fleetd.sandbox.cluster import Sandbox

    state = Sandbox(sandbox_dir).state
    assert state is not None
    return EtcdConfig(endpoints=[f"127.0.0.1:{state.etcd_port}"])


async def wait_active_on(
    sandbox_dir: Path, unit: str, machines: int, deadline: float = 120.0
) -> None:
    """Until `unit` is active on `machines` machines, from the registry's watch."""
    from fleetd.registry import Registry

    def running(snapshot) -> bool:  # type: ignore[no-untyped-def]
        return (
            sum(name == unit and st.active == "active" for (name, _), st in snapshot.states.items())
            >= machines
        )

    async def follow() -> None:
        async with Registry(_etcd_config(sandbox_dir)) as registry:
            await registry.wait_for(running)

    await asyncio.wait_for(follow(), deadline)


async def wait_moved(sandbox_dir: Path, unit: str, dead: str, deadline: float = 120.0) -> str:
    """The machine (not `dead`) where `unit` becomes active, from the registry's watch."""
    from fleetd.registry import Registry

    config = _etcd_config(sandbox_dir)

    def running_elsewhere(snapshot) -> str | None:  # type: ignore[no-untyped-def]
        for (name, machine), st in snapshot.states.items():
            if name == unit and machine != dead and st.active == "active":
                return machine
        return None

    async def follow() -> str:
        async with Registry(config) as registry:
            snapshot = await registry.wait_for(lambda s: running_elsewhere(s) is not None)
        found = running_elsewhere(snapshot)
        assert found is not None
        return found

    return await asyncio.wait_for(follow(), deadline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    parser.add_argument("--dir", default=None, help="sandbox directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "make demo needs root: each sandbox machine is a systemd in its own mount namespace",
            file=sys.stderr,
        )
        return 1
    from fleetd import logs

    logs.configure(0, json=True, stream=open(os.devnull, "w"))
    sandbox_dir = Path(args.dir or tempfile.mkdtemp(prefix="fleetd-demo-"))
    workdir = Path(tempfile.mkdtemp(prefix="fleetd-walkthrough-"))
    write_units(workdir)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    w = Walkthrough(workdir, env)
    started = time.monotonic()
    try:
        w.say("a sandbox of 3 machines: etcd + 3 namespaced systemd machines, each running fleetd")
        up = w.run(
            "fleetd",
            "sandbox",
            "up",
            "--dir",
            str(sandbox_dir),
            "--machines",
            "3",
            "--agent-ttl",
            "5s",
        )
        export = next(line for line in up.out.splitlines() if line.startswith("export "))
        env["FLEETCTL_ENDPOINT"] = export.split("=", 1)[1]
        walkthrough(w, sandbox_dir)
    finally:
        if args.keep:
            print(f"\nthe sandbox keeps running: {export if 'export' in locals() else ''}")
            print(f"stop it with: fleetd sandbox down --dir {sandbox_dir}")
        else:
            w.say("tear down")
            w.run("fleetd", "sandbox", "down", "--dir", str(sandbox_dir), check=False)
    print(f"\nwalkthrough done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
