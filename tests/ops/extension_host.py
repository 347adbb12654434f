"""A mount namespace standing in for a Flatcar or Fedora CoreOS host, for the sysext image's test.

`ExtensionHost` is a private mount namespace of this host, held by one process (`sleep
infinity`, started by `unshare` and stopped by its PID), in which:
- `/run` is a tmpfs of its own (`/run/extensions` is where a host keeps run-time images) and `/`
  is then made shared inside it — what `systemd-sysext merge` needs outside a booted system;
- no Python can be found (`hide_python`): every directory outside /usr holding an interpreter on
  this process's PATH, the interpreter this suite runs (its venv and the installation the venv
  was made from) and pyenv's root are covered with empty tmpfs mounts before the merge; /usr's
  (`/usr/local`, `/usr/lib/python3*`, `/usr/bin/python3*`, libpython) only after it, because
  the merge lays an overlay over /usr whose lower layer is /usr as the disk has it, without the
  mounts inside it;
- `merge` copies an image to /run/extensions/fleetd.raw and runs `systemd-sysext merge`;
  `unmerge` takes the masks inside /usr off, runs `systemd-sysext unmerge` and removes the image.
Nothing of it is seen outside the namespace: the host's /usr, /run and /etc stay as they were.
A sandbox machine made from this namespace (`fleetd sandbox add --mount-namespace`) starts with
what is mounted here, as a machine booted with the extension merged would.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ExtensionHost"]

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE = "/run/extensions/fleetd.raw"  # the extension's name, `fleetd`, is its file's


def python_dirs_outside_usr() -> list[str]:
    """Directories to cover so that no Python outside /usr can be found or run: the suite's
    interpreter, its venv and base installation, pyenv's root, and every directory on PATH that
    holds a `python*` (shims and the like)."""
    found = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    if pyenv.is_dir():
        found.add(pyenv)
    for entry in os.environ.get("PATH", "").split(":"):
        if entry and any(Path(entry).glob("python*")):
            found.add(Path(entry))
    usr = Path("/usr")
    outside = {p.resolve() for p in found if p.is_dir()}
    outside = {p for p in outside if p != usr and usr not in p.parents and p != Path("/")}
    # a directory under another one on the list is covered with it
    return sorted(str(p) for p in outside if not any(q in p.parents for q in outside))


def python_in_usr() -> tuple[list[str], list[str]]:
    """What to cover inside /usr after the merge: directories (tmpfs) and files (/dev/null)."""
    dirs = ["/usr/local", *sorted(str(p) for p in Path("/usr/lib").glob("python3*") if p.is_dir())]
    files = [
        str(p)
        for pattern in ("/usr/bin/python*", "/usr/lib/*/libpython3*")
        for p in sorted(Path("/").glob(pattern.lstrip("/")))
        if p.is_file() and not p.is_symlink()
    ]
    return [d for d in dirs if Path(d).is_dir()], files


class ExtensionHost:
    """`with ExtensionHost() as host: host.merge(image); host.run([...])` (see the module)."""

    def __init__(self) -> None:
        self._holder: subprocess.Popen[bytes] | None = None
        self._usr_masks: list[str] = []

    def __enter__(self) -> ExtensionHost:
        # the holder says so once it runs in the new namespace (before that, /proc/PID/ns/mnt
        # would be this one's: nothing may be mounted through it)
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private",
             "sh", "-c", "echo in; exec sleep infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            assert self._holder.stdout is not None
            if not select.select([self._holder.stdout], [], [], 30.0)[0]:
                raise RuntimeError("unshare made no mount namespace within 30 s")
            said = self._holder.stdout.readline()
            self._holder.stdout.close()
            ours = os.readlink("/proc/self/ns/mnt")
            if said != b"in\n" or os.readlink(f"/proc/{self.pid}/ns/mnt") == ours:
                raise RuntimeError(f"the holder is not in a mount namespace of its own: {said!r}")
            self.sh("mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/extensions "
                    "&& mount --make-rshared /")  # fmt: skip
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Kill the holder, by PID: the namespace, its mounts and its merge go with it."""
        if self._holder is not None:
            with contextlib.suppress(ProcessLookupError):
                self._holder.send_signal(signal.SIGKILL)
            self._holder.wait(timeout=30)
            self._holder = None

    @property
    def pid(self) -> int:
        assert self._holder is not None, "the host's namespace is not up"
        return self._holder.pid

    @property
    def namespace(self) -> str:
        """The namespace's file: `fleetd sandbox add --mount-namespace` takes it."""
        return f"/proc/{self.pid}/ns/mnt"

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """`argv` inside the namespace to its end, with the system's PATH unless `env` says."""
        done = subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, check=False,
            env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})},
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-ec", script], **kwargs)  # type: ignore[arg-type]

    def hide_python(self) -> list[str]:
        """Cover every Python outside /usr (before the merge); what was covered."""
        hidden = python_dirs_outside_usr()
        self.sh("; ".join(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(d)}" for d in hidden))
        return hidden

    def merge(self, image: Path) -> str:
        """The image as /run/extensions/fleetd.raw, merged; then /usr's Pythons covered.
        What `systemd-sysext merge` said."""
        self.run(["cp", str(image), IMAGE])
        merged = self.run(["systemd-sysext", "merge"])
        dirs, files = python_in_usr()
        script = [f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(d)}" for d in dirs]
        script += [f"mount --bind /dev/null {shlex.quote(f)}" for f in files]
        self.sh("; ".join(script))
        self._usr_masks = [*dirs, *files]
        return merged.stdout + merged.stderr

    def unmerge(self) -> str:
        """The masks inside /usr off (last first), the extension unmerged, the image removed.
        What `systemd-sysext unmerge` said."""
        if self._usr_masks:
            self.run(["umount", *reversed(self._usr_masks)])
            self._usr_masks = []
        done = self.run(["systemd-sysext", "unmerge"])
        self.run(["rm", IMAGE])
        return done.stdout + done.stderr

    def mounts(self) -> list[tuple[str, str, str]]:
        """(mount point, file system type, source) of each mount of the namespace, in order."""
        table = []
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            after = fields.index("-")
            table.append((fields[4], fields[after + 1], fields[after + 2]))
        return table

    def files(self, directory: str, depth: int = 99) -> set[str]:
        """Every path under `directory`, `depth` levels down at most, as the namespace sees it."""
        return set(self.run(["find", directory, "-maxdepth", str(depth)]).stdout.split("\n"))

    def path(self, inside: str) -> Path:
        """A path of the namespace, as this process reaches it."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")
