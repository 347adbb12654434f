"""What the dashboard tests and the screenshot share: a real sandbox, `fleetctl dashboard` as a
process."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleetd.demo import write_units
from tests.faults.harness import BIN, sandbox_env, sandbox_up


@dataclass
class Cluster:
    directory: Path
    units: Path  # the walkthrough's unit files
    env: dict[str, str]

    def fleetctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "fleetctl"), *args], env=self.env, cwd=self.units,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done


class DashboardProcess:
    """`fleetctl dashboard --no-open` as a child process; `url` is the URL it printed."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "fleetctl"), "dashboard", "--no-open", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # it prints its URL first
        found = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)
        if found is None:
            self.stop()
            raise AssertionError(f"no URL from fleetctl dashboard: {line!r}")
        self.url = found.group(0)
        self.base, self.token = self.url.split("/?token=")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def sandbox(directory: Path, units: Path) -> Iterator[Cluster]:
    """A 3-machine sandbox in `directory`, torn down on exit; the walkthrough's units in `units`."""
    units.mkdir(parents=True, exist_ok=True)
    write_units(units)
    with sandbox_up(directory) as up_out:
        env = sandbox_env(up_out)
        env.pop("DISPLAY", None)  # headless: nothing these tests start may reach a desktop
        env.pop("WAYLAND_DISPLAY", None)
        yield Cluster(directory, units, env)
