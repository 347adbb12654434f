"""The seed's walkthrough end to end: the real `fleetctl` and `fleetd` entry points as processes,
against a real 3-machine sandbox (etcd + namespaced systemd machines each running fleetd).

Outputs are compared with fleet's formats (shared/docs/fleet-outputs): machine IDs, IPs and
hashes are normalised, TAB layout is kept.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from fleetd.demo import Walkthrough, walkthrough, write_units
from tests.faults.harness import BIN, sandbox_env

pytestmark = pytest.mark.root


def normalise(text: str) -> str:
    text = re.sub(r"\b[0-9a-f]{32}\b", "<MACHINE-ID>", text)
    text = re.sub(r"\b[0-9a-f]{8}\.\.\.", "<ID>...", text)
    text = re.sub(r"127\.0\.0\.1[1-3]\b", "<IP>", text)
    return text


def test_walkthrough(sandbox, tmp_path: Path) -> None:
    directory, up_out = sandbox
    env = sandbox_env(up_out)
    write_units(tmp_path)
    shown: list[str] = []
    w = Walkthrough(tmp_path, env, show=shown.append)
    walkthrough(w, directory)

    out = {" ".join(s.argv): normalise(s.out) for s in w.steps}
    steps = [(" ".join(s.argv), normalise(s.out), s.err) for s in w.steps]
    # every command of the walkthrough succeeded
    assert all(s.code == 0 for s in w.steps), [(s.argv, s.err) for s in w.steps if s.code]

    def nth(command: str, n: int = 0) -> str:
        return [o for c, o, _ in steps if c == command][n]

    assert nth("fleetctl submit hello.service") == "Unit hello.service inactive\n"
    assert nth("fleetctl list-unit-files", 0) == (
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\nhello.service\t44d32a9\tinactive\tinactive\t-\n"
    )
    assert out["fleetctl cat hello"] == (
        "[Unit]\nDescription=Hello World\n\n[Service]\n"
        "ExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'\n"
    )
    assert nth("fleetctl load hello.service") == "Unit hello.service loaded on <ID>.../<IP>\n"
    assert nth("fleetctl list-unit-files", 1) == (
        "UNIT\t\tHASH\tDSTATE\tSTATE\tTARGET\nhello.service\t44d32a9\tloaded\tloaded\t<ID>.../<IP>\n"
    )
    assert nth("fleetctl list-units", 0) == (
        "UNIT\t\tMACHINE\t\t\tACTIVE\t\tSUB\nhello.service\t<ID>.../<IP>\tinactive\tdead\n"
    )
    assert nth("fleetctl start hello") == "Unit hello.service launched on <ID>.../<IP>\n"
    assert nth("fleetctl list-unit-files", 2) == (
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\nhello.service\t44d32a9\tlaunched\tlaunched\t<ID>.../<IP>\n"
    )
    assert nth("fleetctl list-units", 1) == (
        "UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\nhello.service\t<ID>.../<IP>\tactive\trunning\n"
    )
    status = out["fleetctl status hello"]
    assert "● hello.service - Hello World" in status and "Active: active (running)" in status
    assert "linked-runtime" in status
    # (journal right after start may precede the unit's first line: its content is checked below
    # with `journal -f`, which waits for lines as they are written)
    assert len(out["fleetctl journal --lines 3 hello"].splitlines()) <= 3
    assert nth("fleetctl stop hello") == "Unit hello.service loaded on <ID>.../<IP>\n"
    assert nth("fleetctl unload hello") == "Unit hello.service inactive\n"
    assert nth("fleetctl destroy hello") == "Destroyed hello.service\n"
    assert nth("fleetctl list-unit-files", 5) == "UNIT\tHASH\tDSTATE\tSTATE\tTARGET\n"

    # templates: three symlinked instances, one command, three different machines
    start_instances = next(o for c, o, _ in steps if c.startswith("fleetctl start instances/"))
    assert start_instances.count("launched on") == 3
    machines = {line.split()[1] for line in nth("fleetctl list-units", 2).splitlines()[1:]}
    raw = [s.out for s in w.steps if " ".join(s.argv) == "fleetctl list-units"][2]
    assert len({line.split()[1] for line in raw.splitlines()[1:]}) == 3, raw
    assert machines == {"<ID>.../<IP>"}
    assert sum("-> HTTP 200" in line for line in shown) == 3

    # Global on every machine, MachineMetadata on the role=db machine (m2, 127.0.0.12)
    units = [s.out for s in w.steps if " ".join(s.argv) == "fleetctl list-units"][3]
    assert sum(line.startswith("global.service") for line in units.splitlines()) == 3
    assert any(
        line.startswith("dbonly.service") and "127.0.0.12" in line for line in units.splitlines()
    )
    files = nth("fleetctl list-unit-files", 6)
    assert "global.service\t\tedcbd67\tlaunched\t-\t\tglobal\n" in files

    # a rolling update of the Global unit: done, on every machine
    assert nth("fleetctl start --replace global.service").splitlines()[-1] == (
        "global.service: 3/3 updated (done)"
    )
    status = nth("fleetctl rollout status --no-block global.service").splitlines()
    assert status[1:3] == [
        "Progress: 3/3 updated",
        "Policy: UpdateMaxParallel=1 UpdateMinHealthyTime=1s UpdateHealthyDeadline=300s",
    ]
    assert status[0].endswith(", done")

    # failover: hello.service active on a surviving machine; the dead one is gone
    assert any("after its machine died" in line for line in shown)
    final_units = [s.out for s in w.steps if " ".join(s.argv) == "fleetctl list-units"][-1]
    assert any(
        line.startswith("hello.service") and "active\trunning" in line
        for line in final_units.splitlines()
    )
    assert len(out["fleetctl list-machines"].splitlines()) == 1 + 2

    # journal -f streams lines as the unit writes them and ends cleanly on Ctrl-C (exit 0)
    follow = subprocess.Popen(
        [BIN / "fleetctl", "journal", "-f", "--lines", "1", "hello"],
        env=w.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for _ in range(3):  # the last old line, then new ones as they come
            line = follow.stdout.readline()
            assert line, follow.stderr.read()
            lines.append(line)
        assert all("Hello World" in line for line in lines), lines
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=20) == 0
