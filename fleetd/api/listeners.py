"""Where the API listens: the unix socket (mode 0660, or the socket systemd hands over), and the
TLS of the TCP and peer listeners (client certificates of the cluster's CA required).

Apart from the application (`fleetd.api.app`): how a socket is bound and secured does not depend
on what is served on it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import ssl
import stat
from dataclasses import dataclass

import structlog

__all__ = ["TLSFiles", "activated_socket", "bind_unix", "server_context"]

log = structlog.get_logger(__name__)

_SD_LISTEN_FDS_START = 3


@dataclass(frozen=True)
class TLSFiles:
    """The TCP listener's certificate and key, and the CA its clients' certificates must be from."""

    cert: str
    key: str
    ca: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """How a fleetd forwarding to another machine's peer listener connects: it presents
        this certificate and accepts a server whose certificate the CA signed. The server's
        name is not checked (machines are known by ID and IP, which certificates need not
        carry): any certificate of the cluster's CA is a fleetd of the cluster."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def server_context(tls: TLSFiles | ssl.SSLContext) -> ssl.SSLContext:
    """A listener's TLS: the files' server side, or a context the caller made itself."""
    return tls if isinstance(tls, ssl.SSLContext) else tls.server_context()


def bind_unix(path: str, group: str | None) -> socket.socket:
    """A listening unix socket at `path`, mode 0660 (group `group` when named) before anyone
    can connect; a stale socket of a previous fleetd is replaced, any other file refused."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        os.unlink(path)  # a stale socket of a previous fleetd
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)  # before listen(): nobody can connect with looser rights
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        sock.listen(128)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    sock.setblocking(False)
    return sock


def activated_socket() -> socket.socket | None:
    """The unix socket systemd passed (fd 3) when LISTEN_PID names this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    sock = socket.socket(fileno=_SD_LISTEN_FDS_START)
    sock.setblocking(False)
    log.info("api.socket_activated", fd=_SD_LISTEN_FDS_START, family=sock.family.name)
    return sock
