"""A wait ends on the first definite answer: units that fail, that systemd cannot load, that no
machine can take, through the real `fleetctl` against a real sandbox (real systemd machines)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.faults.harness import BIN, sandbox_env
from tests.seed import seed_text

pytestmark = pytest.mark.root

UNIT_LINE = re.compile(r"^Unit (\S+) failed on [0-9a-f]{8}\.\.\./127\.0\.0\.1[1-3]$", re.M)


@pytest.fixture(scope="module")
def fleetctl(sandbox, tmp_path_factory: pytest.TempPathFactory):
    """Run the real fleetctl in a directory of unit files, against the module's sandbox."""
    _directory, up_out = sandbox
    env = sandbox_env(up_out)
    workdir = tmp_path_factory.mktemp("units")

    def run(*args: str, files: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        for name, text in (files or {}).items():
            (workdir / name).write_text(text)
        return subprocess.run(
            [BIN / "fleetctl", *args], cwd=workdir, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    return run


def assert_failed(done: subprocess.CompletedProcess, name: str, reason: str) -> None:
    """fleet's line on stdout; systemd's words, the journal heading and fleet's two error
    forms on stderr; exit status 1."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert UNIT_LINE.findall(done.stdout) == [name], done.stdout
    assert f"{name}: {reason}" in done.stderr, done.stderr
    assert f"Error waiting for units: unit {name} failed on " in done.stderr
    assert "Error waiting for unit states, exit status: " in done.stderr


def test_seed_hello_without_docker_fails_with_the_reason_and_its_journal(fleetctl) -> None:
    hello = seed_text("hello.service")
    done = fleetctl("start", "hello.service", files={"hello.service": hello})
    assert_failed(done, "hello.service", "systemd reports ActiveState=failed SubState=failed, "
                  "Result=exit-code, ExecStartPre=/usr/bin/docker pull busybox (code=exited, "
                  "status=")  # fmt: skip
    # the journal shows why: docker's error, or systemd's when there is no docker at all
    journal = done.stderr.split("hello.service: last 10 journal lines on ", 1)[1]
    journal = journal.split("\nError waiting for units: ", 1)[0]
    assert re.search(r"docker|Docker", journal), done.stderr
    # the unit stays in the cluster, desired launched: list-units shows it failed
    units = fleetctl("list-units").stdout
    assert re.search(r"^hello\.service\t\S+\t+failed\t+failed$", units, re.M), units


def test_a_process_that_dies_at_once_is_a_failure_not_a_launch(fleetctl) -> None:
    done = fleetctl(
        "start", "--lines", "0", "false.service",
        files={"false.service": "[Service]\nExecStart=/bin/false\n"},
    )  # fmt: skip
    assert_failed(
        done,
        "false.service",
        "systemd reports ActiveState=failed SubState=failed, "
        "Result=exit-code, ExecStart=/bin/false (code=exited, status=1/FAILURE)",
    )
    assert "journal lines" not in done.stderr  # --lines 0: no journal
    # started again while it is failed (already desired launched): fleet said nothing and
    # exited 0; the failure is told again, exit 1
    again = fleetctl("start", "--lines", "0", "false.service")
    assert_failed(again, "false.service", "systemd reports ActiveState=failed")


def test_a_unit_systemd_refuses_to_load(fleetctl) -> None:
    done = fleetctl("start", "noexec.service", files={"noexec.service": "[Service]\nUser=x\n"})
    assert_failed(done, "noexec.service", "systemd cannot load it: LoadState=bad-setting")


def test_restart_always_ends_the_wait_once_systemd_gives_up(fleetctl) -> None:
    # between attempts the unit is activating/auto-restart (and, in systemd 252, inactive/dead
    # for a moment): not a failure; after five quick attempts systemd stops and it is failed
    text = "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=50ms\n"
    done = fleetctl("start", "--lines", "3", "loop.service", files={"loop.service": text})
    assert_failed(
        done,
        "loop.service",
        "systemd reports ActiveState=failed SubState=failed, "
        "Result=exit-code, ExecStart=/bin/false (code=exited, status=1/FAILURE)",
    )
    # systemd really gave up: it is not restarting it any more
    units = fleetctl("list-units").stdout
    assert re.search(r"^loop\.service\t\S+\t+failed\t+failed$", units, re.M), units


def test_a_unit_no_machine_can_take(fleetctl) -> None:
    text = "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nMachineMetadata=role=nowhere\n"
    done = fleetctl("start", "nowhere.service", files={"nowhere.service": text})
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == "Unit nowhere.service inactive\n"  # fleet's line for a new unit
    assert done.stderr.startswith(
        "Error waiting for units: unit nowhere.service cannot be scheduled: no machine matches "
        "MachineMetadata role=nowhere\n"
    ), done.stderr


def test_healthy_units_still_launch_and_a_failed_one_runs_afresh_after_stop(fleetctl) -> None:
    # one command, one good unit and one bad: the good one is reported as before, exit 1
    files = {"ok.service": "[Service]\nExecStart=/bin/sleep 600\n",
             "once.service": "[Service]\nExecStart=/bin/sh -c 'exit 42'\n"}  # fmt: skip
    done = fleetctl("start", "--lines", "0", "ok.service", "once.service", files=files)
    assert re.search(r"^Unit ok\.service launched on ", done.stdout, re.M), done.stdout
    assert_failed(
        done,
        "once.service",
        "systemd reports ActiveState=failed SubState=failed, "
        "Result=exit-code, ExecStart=/bin/sh -c exit 42 (code=exited, status=42)",
    )
    # stop resets the failure; the next start is judged afresh (and fails afresh)
    stopped = fleetctl("stop", "once.service")
    assert stopped.returncode == 0, stopped.stderr
    units = fleetctl("list-units").stdout
    assert re.search(r"^once\.service\t\S+\t+inactive\t+dead$", units, re.M), units
    again = fleetctl("start", "--lines", "0", "once.service")
    assert_failed(again, "once.service", "systemd reports ActiveState=failed")
