"""`fleetctl --tunnel HOST[:PORT]`: reach the API through an SSH connection to HOST, as fleet did.

The system `ssh` client forwards a unix socket in a private temporary directory (mode 0700) to
the endpoint as seen from HOST: the endpoint's socket path (`/var/run/fleet.sock` by default) or
its `host:port`. fleetctl's API client connects to that local socket; an `https://` endpoint is
still verified under its own host name. ssh says it is ready with a `LocalCommand` that runs once
the local socket listens (no waiting on the file to appear); it is stopped by PID when the
command ends, and dies with fleetctl if fleetctl is killed (PR_SET_PDEATHSIG).

Imported only when --tunnel is given: fleetctl without it starts no process and loads nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Protocol
from urllib.parse import urlsplit

from fleetd.cli.failure import Failure
from fleetd.cli.ssh import ssh_argv

__all__ = ["Tunnel", "TunnelSettings", "remote_target", "split_host_port", "tunnel_argv"]

_READY = b"fleetctl-tunnel-ready"
_PR_SET_PDEATHSIG = 1
_SUN_PATH_MAX = 100  # a unix socket's path must fit in 108 bytes


class TunnelSettings(Protocol):
    """The global flags the tunnel reads (fleetd.cli.context.Settings has them; not imported
    here, since the context opens the tunnel)."""

    tunnel: str
    ssh_username: str
    strict_host_key_checking: bool
    known_hosts_file: str
    ssh_timeout: float

    def debug_log(self, message: str) -> None: ...


def split_host_port(address: str, default_port: int = 22) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` → (host, port); fleet's default port is 22."""
    host, port = address, default_port
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        if rest.startswith(":"):
            port = _port(address, rest[1:])
    elif address.count(":") == 1:
        host, raw = address.split(":")
        port = _port(address, raw)
    if not host:
        raise Failure(f"--tunnel {address!r}: no host (expected HOST[:PORT])")
    return host, port


def _port(address: str, raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise Failure(f"--tunnel {address!r}: invalid port {raw!r} (expected HOST[:PORT])")
    return int(raw)


def remote_target(endpoint: str) -> str:
    """What the tunnel forwards to on the remote side: the unix socket path of a `unix://`
    endpoint, else the endpoint's `host:port` (http 80, https 443 by default)."""
    parts = urlsplit(endpoint.split(",")[0].strip())
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tunnel_argv(opts: TunnelSettings, local_socket: str, target: str) -> list[str]:
    """The ssh command line of the tunnel: no session (-N), one local forward, agent
    forwarding as fleet's tunnel had, the global SSH flags."""
    host, port = split_host_port(opts.tunnel)
    extra = [
        "-N",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "ControlPath=none",  # a connection of its own, never a multiplexed one
        "-o", "PermitLocalCommand=yes",
        "-o", f"LocalCommand=echo {_READY.decode()}",
        "-L", f"{local_socket}:{target}",
    ]  # fmt: skip
    return ssh_argv(
        host,
        [],
        user=opts.ssh_username,
        port=port,
        forward_agent=True,
        strict=opts.strict_host_key_checking,
        known_hosts=os.path.expanduser(opts.known_hosts_file),
        timeout=opts.ssh_timeout,
        tunnel="",
        extra=extra,
    )


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Tunnel:
    """One ssh process forwarding `socket` (local) to the endpoint on the tunnel's host."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="fleetctl-tunnel-")  # mode 0700
        if len(os.path.join(self.directory, "api.sock")) > _SUN_PATH_MAX:  # a long $TMPDIR
            os.rmdir(self.directory)
            self.directory = tempfile.mkdtemp(prefix="fleetctl-tunnel-", dir="/tmp")
        self.socket = os.path.join(self.directory, "api.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def open(self, opts: TunnelSettings, endpoint: str) -> None:
        """Start ssh and return once the local socket listens (or fail with ssh's status)."""
        argv = tunnel_argv(opts, self.socket, remote_target(endpoint))
        opts.debug_log(f"running {argv}")
        if opts.strict_host_key_checking:
            known = os.path.expanduser(opts.known_hosts_file)
            os.makedirs(os.path.dirname(known) or ".", mode=0o700, exist_ok=True)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                preexec_fn=_die_with_parent,  # fleetctl runs no threads here
            )  # fmt: skip
        except OSError as err:
            raise Failure(f"failed initializing SSH tunnel through {opts.tunnel}: {err}") from None
        assert self.proc.stdout is not None
        with self.proc.stdout as out:
            ready = out.readline().strip() == _READY  # ssh's own errors went to stderr
        if not ready:
            code = self.proc.wait()
            raise Failure(
                f"failed initializing SSH tunnel through {opts.tunnel}: ssh exited with status "
                f"{code}"
            )

    def close(self) -> None:
        """Stop ssh (by its PID: it is our child) and remove the socket's directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.directory)
