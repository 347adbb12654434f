"""What a sandbox is, as `<dir>/sandbox.json` records it.

Every `fleetd sandbox` command is a new process, so the state file is the sandbox's only memory:
the etcd PID and ports, and per machine its name, ID, IP, metadata, cgroup name, size (the
limits `up` gave it and the cgroup files that hold them: sizes.py), the fleetd it runs and the
mount namespace it is made from when `add` said so, and the PIDs of its systemd and fleetd.
`status`, `kill`, `start`, `restart`, `exec` and `down` read it to find (and stop, by PID) what
`up` and `add` started, from any shell. It is written whole, through a temporary
file and a rename, so a command that dies half way leaves the previous version, never half of
one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fleetd.errors import PermanentError
from fleetd.model import short_id
from fleetd.registry import EtcdConfig
from fleetd.sandbox.tls import SandboxTLS

__all__ = ["STATE_FILE", "MachineRecord", "SandboxError", "SandboxState", "default_dir"]

STATE_FILE = "sandbox.json"


class SandboxError(PermanentError):
    """A sandbox command that cannot be carried out; the message says why and what to do."""


def default_dir() -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"fleetd-sandbox-{os.getuid()}"


@dataclass
class MachineRecord:
    name: str  # m1, m2, ...
    id: str
    ip: str
    metadata: dict[str, str]
    cgroup_name: str  # the Machine's name: unique per sandbox, so sandboxes can coexist
    systemd_pid: int = 0
    fleetd_pid: int = 0
    # its size (`up --memory/--cpus/--reserved-*`; 0: none) and the cgroups holding the limits:
    # directory → file → value, written at every start (sizes.py: limit_cgroups)
    memory: int = 0
    cpus: float = 0.0
    reserved_memory: int = 0
    reserved_cpu: float = 0.0
    limits: dict[str, dict[str, str]] = field(default_factory=dict)
    # `add --fleetd`: the fleetd it runs, a path inside the machine ("": this Python's
    # `-m fleetd.main`); `add --mount-namespace`: the namespace its own is made from ("": ours)
    fleetd: str = ""
    mount_namespace: str = ""

    @property
    def legend(self) -> str:
        return f"{short_id(self.id)}.../{self.ip}"


@dataclass
class SandboxState:
    dir: str
    etcd_pid: int
    etcd_port: int
    etcd_peer_port: int
    peer_port: int
    agent_ttl: float
    machines: list[MachineRecord] = field(default_factory=list)
    # --tls: etcd serves https with client certificates and auth; certificates and the etcd
    # credentials (files mode 0600, never this file) live in pki_dir
    tls: bool = False
    pki_dir: str = ""

    @property
    def etcd_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.etcd_port}"

    @property
    def secure(self) -> SandboxTLS | None:
        return SandboxTLS(Path(self.pki_dir)) if self.tls else None

    def etcd_config(self, request_timeout: float = 5.0) -> EtcdConfig:
        endpoint = f"127.0.0.1:{self.etcd_port}"
        if self.secure is None:
            return EtcdConfig(endpoints=[endpoint], request_timeout=request_timeout)
        return self.secure.etcd_config(endpoint, request_timeout)

    def save(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        tmp.replace(path)

    def save_record(self, record: MachineRecord) -> None:
        """Save with `record` in place of the machine of its name (a record found by `find` is
        a copy read from the file, not one of `machines`)."""
        self.machines = [record if r.name == record.name else r for r in self.machines]
        self.save()

    @classmethod
    def load(cls, directory: Path) -> SandboxState | None:
        try:
            data = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError as err:
            raise SandboxError(
                f"{directory / STATE_FILE} is damaged ({err}); remove the directory"
            ) from None
        machines = [MachineRecord(**m) for m in data.pop("machines")]
        return cls(**data, machines=machines)
