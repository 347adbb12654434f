"""A failed unit in systemd's words: the process that failed and its exit, as systemctl shows."""

from __future__ import annotations

import pytest

from fleetd.systemd.failure import exit_status_text, failed_process


def entry(path: str, argv: list[str], code: int, status: int, ignore: bool = False) -> list:
    # (path, argv, ignore_failure, start_rt, start_mono, exit_rt, exit_mono, pid, code, status)
    return [path, argv, ignore, 1, 1, 2, 2, 42, code, status]


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        pytest.param(1, 1, "code=exited, status=1/FAILURE", id="exit-1"),
        pytest.param(1, 203, "code=exited, status=203/EXEC", id="exec-failed"),
        pytest.param(1, 42, "code=exited, status=42", id="unnamed-status"),
        pytest.param(2, 9, "code=killed, status=9/KILL", id="killed"),
        pytest.param(3, 11, "code=dumped, status=11/SEGV", id="core-dump"),
    ],
)
def test_exit_status_text(code: int, status: int, expected: str) -> None:
    assert exit_status_text(code, status) == expected


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        pytest.param(
            {"ExecStart": [entry("/bin/false", ["/bin/false"], 1, 1)],
             "ExecMainCode": 1, "ExecMainStatus": 1},
            "ExecStart=/bin/false (code=exited, status=1/FAILURE)", id="execstart",
        ),
        # the seed's hello.service without Docker: the first ExecStartPre without '-' fails
        pytest.param(
            {"ExecStartPre": [
                entry("/usr/bin/docker", ["/usr/bin/docker", "kill", "hello"], 1, 203, True),
                entry("/usr/bin/docker", ["/usr/bin/docker", "pull", "busybox"], 1, 203)],
             "ExecStart": [entry("/usr/bin/docker", ["/usr/bin/docker", "run"], 0, 0)]},
            "ExecStartPre=/usr/bin/docker pull busybox (code=exited, status=203/EXEC)",
            id="execstartpre-not-ignored",
        ),
        pytest.param({"ExecMainCode": 2, "ExecMainStatus": 15},
                     "main process (code=killed, status=15/TERM)", id="main-killed"),
        # a start timeout or a start limit: no process failed, Result= tells
        pytest.param({"ExecStart": [entry("/bin/sleep", ["/bin/sleep", "9"], 1, 0)]}, "",
                     id="nothing-failed"),
        pytest.param({}, "", id="no-properties"),
    ],
)  # fmt: skip
def test_failed_process(props: dict, expected: str) -> None:
    assert failed_process(props) == expected
