"""Processes the sandbox starts outside a machine: ready when they say so, stopped by PID only.

A `ChildProcess` is started with its own sd_notify socket (notify.py, in the abstract namespace:
no file to clean up, no limit from a deep data dir's path length) and waited for on its READY=1,
so a start costs what the process needs and nothing is polled. `stop_pid` stops a process a
previous command started (the sandbox's etcd, a machine's fleetd: `down` and `restart` find them
in the state file), waiting on its pidfd: PID 1 of these VMs does not reap, so `kill -0` would
call a zombie alive. Both stop the same way: SIGTERM, then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from fleetd.sandbox.notify import NotifySocket

__all__ = ["ChildProcess", "pid_alive", "stop_pid"]


class ChildProcess:
    """One child process with its output appended to `log_file`; `detached`: in its own
    session, so it outlives the command that started it."""

    def __init__(self, label: str, log_file: Path, *, detached: bool = False) -> None:
        self.label = label  # names its notify socket
        self.log_file = log_file
        self.detached = detached
        self._proc: subprocess.Popen[bytes] | None = None
        self._notify: NotifySocket | None = None  # bound by launch(), closed once ready

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self, argv: Sequence[str]) -> None:
        """Start `argv` with NOTIFY_SOCKET set, without waiting for its READY=1."""
        self._close_notify()
        notify = NotifySocket(f"@fleetd-{self.label}-{os.getpid()}-{secrets.token_hex(6)}")
        notify.__enter__()
        env = {**os.environ, "NOTIFY_SOCKET": notify.address}
        logf = self.log_file.open("ab")
        try:
            self._proc = subprocess.Popen(
                argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
                env=env,
            )
        except BaseException:
            notify.close()
            raise
        finally:
            logf.close()
        self._notify = notify

    def wait_ready(self, timeout: float) -> None:
        """Block until the launched process sends READY=1: `notify.NotReady` after `timeout` s,
        `notify.ProcessExited` at once if it exits first. Once it was ready, returns at once."""
        proc, notify = self._proc, self._notify
        if proc is None or notify is None:
            return
        try:
            notify.wait_ready(timeout, proc.pid)
        finally:
            self._close_notify()

    def wait(self) -> int:
        """Its exit code, once it has exited (it has when `wait_ready` said so)."""
        assert self._proc is not None, "wait() before launch()"
        return self._proc.wait()

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the PID it stopped, None when never launched."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self._forget(proc)

    def kill(self) -> int | None:
        """kill -9, as a crash would; the PID it killed, None when never launched."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        return self._forget(proc)

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _forget(self, proc: subprocess.Popen[bytes]) -> int:
        self._proc = None
        self._close_notify()
        return proc.pid

    def _close_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: PID 1 here does not reap, so kill -0 lies)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except OSError:
        return False
    return False


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM `pid` and wait on its pidfd; SIGKILL after `timeout`."""
    if not pid or not pid_alive(pid):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not select.select([fd], [], [], timeout)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
