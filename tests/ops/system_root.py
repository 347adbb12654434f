"""A throw-away copy of this host booted by a real `systemd --system`, for installing packages.

`SystemRoot` is what systemd-nspawn does, by hand with util-linux, over a copy-on-write view of
the host's own root, so a package can be installed, started, used and purged for real without
touching the host's /usr, /etc or package database:
- a cgroup of its own in the unified hierarchy (`/sys/fs/cgroup/unified/fleetdroot-*` on this
  host's hybrid layout, which binds no controller there), which the starting shell enters;
- new mount, UTS, IPC, network, PID and cgroup namespaces (`unshare`); in them, `root/`: an
  overlay with the host's `/` below and a tmpfs above (every write lands in that tmpfs, which
  disappears with the namespace); its own /proc (with /proc/sys read-only, so no sysctl of the
  host changes), /sys read-only (so no udev), the cgroup2 hierarchy rooted at that cgroup, a /dev
  of its own (the harmless devices bound from the host's, a new devpts), tmpfs on /run and /tmp,
  a fresh machine ID, only a loopback interface;
- `/run/host` of the root is `dir/host`, where the test binds the sd_notify socket systemd
  reports READY=1 to once booted (`NOTIFY_SOCKET=/run/host/notify`, as under nspawn);
- it boots `fleetd-test.target`: sysinit.target and sockets.target (journald, D-Bus, tmpfiles,
  sysusers), not the host's timers and services. Masked for this boot (`MASKED`):
  systemd-modules-load.service, the one unit there that would reach out of the namespaces (it
  loads kernel modules), and systemd-logind, which apt-get wakes over D-Bus for an inhibitor
  lock (it goes on without) and which would write state of its own into the root while a test
  compares its files;
- without the host's /usr/sbin/policy-rc.d, if it has one: a container image's rule that
  maintainer scripts start and stop no service, which a real host does not have;
- `run` executes a command inside (`nsenter --all` with the root's root and `/` as working
  directory), as root or as a user (`setpriv --init-groups`: no PAM, no login session);
- `stop`: SIGKILL to the namespace's PID 1, by PID: the kernel ends every process of its PID
  namespace; the mount namespace (overlay, tmpfs) goes with the last of them; then the cgroup is
  removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shlex
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fleetd.sandbox.notify import NotifySocket

__all__ = ["RootError", "SystemRoot"]

# the unified (cgroup2) hierarchy: beside the v1 ones on a hybrid host like this one, else the root
UNIFIED = next(
    (p for p in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")) if (p / "cgroup.procs").exists()
     and (p / "cgroup.controllers").exists()),
    Path("/sys/fs/cgroup/unified"),
)  # fmt: skip
TARGET = """\
[Unit]
Description=fleetd's package test: the system without the host's services and timers
Requires=sysinit.target sockets.target
After=sysinit.target sockets.target
"""
MASKED = ("systemd-modules-load.service", "systemd-logind.service")
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# Runs as PID 1 of the new namespaces; $1 is the directory of the root, the machine ID in $2.
_BOOT = r"""
set -eu
d=$1 r=$1/root
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs "$d/layers"
mkdir "$d/layers/upper" "$d/layers/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/layers/upper,workdir=$d/layers/work" "$r"
mount -t proc proc "$r/proc"
mount --bind "$r/proc/sys" "$r/proc/sys" && mount -o remount,bind,ro "$r/proc/sys"
mount -t sysfs -o ro sysfs "$r/sys"
mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
mount -t tmpfs -o mode=0755 tmpfs "$r/dev"
for dev in {devices}; do touch "$r/dev/$dev"; mount --bind "/dev/$dev" "$r/dev/$dev"; done
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mount -t tmpfs tmpfs "$r/dev/shm"
touch "$r/dev/console" && mount --bind /dev/null "$r/dev/console"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mkdir -p "$r/run/host" "$r/run/systemd/system"
mount --bind "$d/host" "$r/run/host"
cp "$d/fleetd-test.target" "$r/run/systemd/system/"
for unit in {masked}; do ln -s /dev/null "$r/run/systemd/system/$unit"; done
mount -t tmpfs tmpfs "$r/tmp"
echo "$2" > "$r/etc/machine-id"
rm -f "$r/usr/sbin/policy-rc.d"
ip link set lo up
exec chroot "$r" /lib/systemd/systemd --system --unit=fleetd-test.target --log-target=journal
""".replace("{devices}", " ".join(_DEVICES)).replace("{masked}", " ".join(MASKED))


class RootError(RuntimeError):
    """The root could not be booted, or a command in it failed."""


class SystemRoot:
    """`with SystemRoot(directory) as root: root.run(["apt-get", ...])` (see the module)."""

    def __init__(self, directory: Path, boot_timeout: float = 60.0) -> None:
        self.dir = directory
        self.boot_timeout = boot_timeout
        self.machine_id = secrets.token_hex(16)
        self.cgroup = UNIFIED / f"fleetdroot-{secrets.token_hex(4)}"
        self._unshare: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the namespace's PID 1 (systemd), as the host sees it

    def __enter__(self) -> SystemRoot:
        try:
            self.boot()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def boot(self) -> None:
        for sub in ("layers", "root", "host"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "fleetd-test.target").write_text(TARGET)
        self.cgroup.mkdir()
        enter = f"echo $$ > {shlex.quote(str(self.cgroup / 'cgroup.procs'))}"
        with NotifySocket(self.dir / "host" / "notify") as notify:
            self._unshare = subprocess.Popen(
                ["sh", "-c", f'{enter} && exec "$@"', "sh",
                 "unshare", "--mount", "--uts", "--ipc", "--net", "--pid", "--fork", "--cgroup",
                 "sh", "-c", _BOOT, "boot", str(self.dir), self.machine_id],
                stdin=subprocess.DEVNULL, stdout=(self.dir / "boot.log").open("wb"),
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "container": "fleetd-test", "NOTIFY_SOCKET": "/run/host/notify"},
            )  # fmt: skip
            try:
                notify.wait_ready(self.boot_timeout, self._unshare.pid)
            except Exception as err:
                raise RootError(f"the root did not boot: {err}; {self.log()}") from None
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        self.pid = int(children.read_text().split()[0])

    def log(self) -> str:
        return (self.dir / "boot.log").read_text(errors="replace")[-2000:]

    def command(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """`argv` as run inside the root, as root or as `user` (with that user's groups)."""
        as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
        return ["nsenter", f"--target={self.pid}", "--all", "--root", "--wdns=/", "--",
                *as_user, *argv]  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside to its end (a bound: `timeout`); `check`: a failure is an error
        with its output."""
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        done = subprocess.run(
            self.command(argv, user), capture_output=True, text=True, timeout=timeout,
            check=False, env={**base, **(env or {})},
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RootError(
                f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def path(self, inside: str) -> Path:
        """A path of the root, as the host reaches it."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def files_under(self, trees: Iterable[str], excluded: Iterable[str]) -> set[str]:
        """Every path (file, directory, link) in these trees of the root, but those under
        `excluded`; and every name at the top of the root."""
        root = self.path("/")
        skip = {str(root / e.lstrip("/")) for e in excluded}
        found = {"/" + name for name in os.listdir(root)}
        for tree in trees:
            for top, dirs, names in os.walk(root / tree.lstrip("/")):
                dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
                for name in (*dirs, *names):
                    path = os.path.join(top, name)
                    if path not in skip:
                        found.add("/" + os.path.relpath(path, root))
        return found

    def stop(self) -> None:
        """Kill the namespace's PID 1 (so every process of the root), remove the cgroup."""
        if self.pid:
            _kill_and_wait(self.pid)
            self.pid = 0
        if self._unshare is not None:
            with contextlib.suppress(ProcessLookupError):
                self._unshare.kill()
            self._unshare.wait(timeout=30)
            self._unshare = None
        if self.cgroup.is_dir():
            for leftover in sorted(self.cgroup.rglob("*/"), key=lambda p: -len(p.parts)):
                if leftover.is_dir():
                    leftover.rmdir()
            self.cgroup.rmdir()


def _kill_and_wait(pid: int, within: float = 30.0) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        if not select.select([fd], [], [], within)[0]:
            raise RootError(f"the root's PID 1 ({pid}) survived SIGKILL for {within:g}s")
    finally:
        os.close(fd)
