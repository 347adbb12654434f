"""SIGHUP, leases and FLEET_* variables through a real fleetd.

Each test starts the real `fleetd` entry point (`python -m fleetd.main`, as the sandbox does)
inside a namespaced `systemd --user` machine, with a configuration file, on the session etcd
under the test's own prefix; it reads fleetd's JSON log lines as they come and waits for the
events it needs (with a deadline), and reads etcd through a Registry. The TLS case talks to the
TCP API with the real `fleetctl`. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fleetd.registry import Registry, Snapshot
from fleetd.sandbox.etcd import EtcdServer
from fleetd.sandbox.machine import Machine
from fleetd.sandbox.pki import make_pki
from tests.faults.harness import BIN
from tests.waiting import DEADLINE, until

pytestmark = pytest.mark.root


class Fleetd:
    """A running fleetd and the events it logged so far (one JSON object per line)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._logged = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "(not JSON)", "line": line}
            async with self._logged:
                self.events.append(event)
                self._logged.notify_all()
        async with self._logged:
            self.events.append({"event": "(exited)"})
            self._logged.notify_all()

    async def event(self, name: str, after: int = 0, **fields: Any) -> dict[str, Any]:
        """The first event `name` (with `fields`) logged after the first `after` events."""

        def found() -> dict[str, Any] | None:
            for event in self.events[after:]:
                if event.get("event") == "(exited)":
                    raise AssertionError(f"fleetd exited before {name}: {self.events[-20:]}")
                if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                    return event
            return None

        async with asyncio.timeout(DEADLINE), self._logged:
            await self._logged.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result

    async def reload(self) -> dict[str, Any]:
        """SIGHUP, then the event that ends the reload."""
        mark = len(self.events)
        os.kill(self.proc.pid, signal.SIGHUP)
        async with asyncio.timeout(DEADLINE), self._logged:
            await self._logged.wait_for(
                lambda: any(
                    e.get("event") in ("fleetd.configuration_reloaded", "fleetd.reload_failed")
                    for e in self.events[mark:]
                )
            )
        return next(
            e
            for e in self.events[mark:]
            if e.get("event") in ("fleetd.configuration_reloaded", "fleetd.reload_failed")
        )

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(DEADLINE):
                    await self.proc.wait()
            except TimeoutError:
                raise AssertionError(
                    f"fleetd ignored SIGTERM; it logged {self.events[-15:]}"
                ) from None
        await self._reader


StartFleetd = Callable[..., "asyncio.Future[Fleetd]"]


@pytest.fixture
async def machine() -> AsyncIterator[Machine]:
    async with Machine(f"rl{os.getpid() % 100000}") as m:
        yield m


@pytest.fixture
async def start_fleetd(
    machine: Machine, etcd: EtcdServer, key_prefix: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Start fleetd in `machine` with `conf` as its configuration file (and `env` added); flags
    give only what a test never reloads (etcd, the machine's bus and directories)."""
    started: list[Fleetd] = []

    async def start(conf: Path, env: dict[str, str] | None = None) -> Fleetd:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        proc = await machine.exec(
            sys.executable, "-m", "fleetd.main", "--config", str(conf),
            f"--etcd-servers={','.join(etcd.endpoints)}", f"--etcd-key-prefix={key_prefix}",
            f"--dbus-address={machine.bus_address}", "--units-directory=/run/fleet/units",
            "--runtime-dir=/run/fleet", f"--api-socket={machine.root / 'fleet.sock'}",
            "--machine-id-file=/etc/machine-id", "--public-ip=127.0.0.1",
            env={**clean, **(env or {})}, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        fleetd = Fleetd(proc)
        started.append(fleetd)
        return fleetd

    try:
        yield start
    finally:
        for fleetd in started:
            await fleetd.stop()


def registered(machine_id: str, **metadata: str) -> Callable[[Snapshot], bool]:
    def holds(snapshot: Snapshot) -> bool:
        doc = snapshot.machines.get(machine_id)
        return doc is not None and all(doc.metadata.get(k) == v for k, v in metadata.items())

    return holds


async def test_sighup_applies_metadata_and_reservations_and_names_what_needs_a_restart(
    machine: Machine, start_fleetd, registry: Registry, tmp_path: Path
) -> None:
    conf = tmp_path / "fleet.conf"
    conf.write_text("metadata=role=web\nagent_ttl=6500ms\nengine_ttl=5s\n")
    fleetd = await start_fleetd(conf, {"FLEET_NO_SUCH_OPTION": "1"})

    # an unknown FLEET_* variable is a warning, not the end of fleetd (fleet ignored them)
    await fleetd.event("config.unknown_variable", variable="FLEET_NO_SUCH_OPTION")
    joined = await fleetd.event("agent.registered", machine=machine.machine_id)
    leading = await fleetd.event("engine.leading", machine=machine.machine_id)
    # each lease has its own TTL: agent_ttl 6.5 s rounded up to 7, engine_ttl 5 s
    granted = {
        e["lease"]: e["ttl"] for e in fleetd.events if e["event"] == "registry.lease_granted"
    }
    assert (granted[joined["lease"]], granted[leading["lease"]]) == (7, 5)
    before = await until(registry, registered(machine.machine_id, role="web"))
    facts = {
        k: v
        for k, v in before.machines[machine.machine_id].metadata.items()
        if k.startswith("fleet.")
    }

    conf.write_text(
        "metadata=role=db,disk=ssd\nreserved_memory=256M\nagent_ttl=10s\nengine_ttl=5s\n"
    )
    reloaded = await fleetd.reload()
    assert reloaded["event"] == "fleetd.configuration_reloaded", reloaded
    assert reloaded["applied"] == ["metadata", "reserved_memory"]
    assert reloaded["needs_restart"] == ["agent_ttl"]
    assert reloaded["machine"] == "registered again"
    after = await until(
        registry,
        registered(
            machine.machine_id, role="db", disk="ssd", **{"fleet.memory-reserved": str(256 << 20)}
        ),
    )
    doc = after.machines[machine.machine_id]
    assert "web" not in doc.metadata.values()
    assert {k: v for k, v in doc.metadata.items() if k in facts} == facts  # still as measured

    # a configuration that does not parse changes nothing: fleetd keeps running as it was
    conf.write_text("metadata=role=db\nagent_tll=10s\n")
    refused = await fleetd.reload()
    assert refused["event"] == "fleetd.reload_failed"
    assert "unknown option 'agent_tll'" in refused["error"]
    # the running configuration was kept: agent_ttl still differs from the file, metadata not
    conf.write_text(
        "metadata=role=db,disk=ssd\nreserved_memory=256M\nagent_ttl=10s\nengine_ttl=5s\n"
    )
    again = await fleetd.reload()
    assert (again["applied"], again["needs_restart"], again["machine"]) == (
        [], ["agent_ttl"], "unchanged",
    )  # fmt: skip
    assert fleetd.proc.returncode is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _fleetctl(port: int, ca: Path, cert: Path, key: Path) -> tuple[int, str, str]:
    """The real fleetctl over HTTPS to fleetd's TCP API with a client certificate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCTL_")}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "fleetctl"), f"--endpoint=https://127.0.0.1:{port}", f"--ca-file={ca}",
        f"--cert-file={cert}", f"--key-file={key}", "--request-timeout=10", "list-machines",
        "--no-legend", "--fields=machine", "--full",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_sighup_rereads_the_tls_files_of_the_tcp_api(
    machine: Machine, start_fleetd, tmp_path: Path
) -> None:
    old, new = (
        make_pki(tmp_path / "old", ca_name="old CA"),
        make_pki(tmp_path / "new", ca_name="new CA"),
    )
    live = tmp_path / "live"  # the paths fleet.conf names; certificates are renewed in place
    live.mkdir()

    def install(pki) -> None:  # type: ignore[no-untyped-def]
        for source, name in (
            (pki.server_cert, "api.pem"),
            (pki.server_key, "api-key.pem"),
            (pki.ca, "ca.pem"),
        ):
            shutil.copyfile(source, live / name)

    install(old)
    port = _free_port()
    conf = tmp_path / "fleet.conf"
    conf.write_text(
        f"api_listen=127.0.0.1:{port}\napi_tls_cert={live / 'api.pem'}\n"
        f"api_tls_key={live / 'api-key.pem'}\napi_tls_ca={live / 'ca.pem'}\n"
    )
    fleetd = await start_fleetd(conf)
    await fleetd.event("agent.registered", machine=machine.machine_id)
    rc, out, err = await _fleetctl(port, old.ca, old.client_cert, old.client_key)
    assert (rc, out.strip()) == (0, machine.machine_id), err

    install(new)
    reloaded = await fleetd.reload()
    # the names did not change, the files did: they are read again all the same
    assert (reloaded["applied"], reloaded["tls"]) == ([], "re-read"), reloaded
    rc, out, err = await _fleetctl(port, new.ca, new.client_cert, new.client_key)
    assert (rc, out.strip()) == (0, machine.machine_id), err
    # the listener now trusts only the new CA: a client certificate of the old one is refused
    rc, out, _ = await _fleetctl(port, new.ca, old.client_cert, old.client_key)
    assert rc != 0 and out == ""

    # a key that cannot be loaded keeps the running certificates
    (live / "api-key.pem").write_text("not a key\n")
    broken = await fleetd.reload()
    assert broken["tls"].startswith("not re-read"), broken
    await fleetd.event("fleetd.tls_reload_failed")
    rc, out, err = await _fleetctl(port, new.ca, new.client_cert, new.client_key)
    assert (rc, out.strip()) == (0, machine.machine_id), err
    assert fleetd.proc.returncode is None
