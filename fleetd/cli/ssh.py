"""The system `ssh` client's command line, shared by `fleetctl ssh`, the SSH fallback of status
and journal (fleetd/cli/remote.py) and `--tunnel` (fleetd/cli/tunnel.py). Imports nothing of the
CLI, so both can use it without importing each other."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ssh_argv"]


def ssh_argv(
    address: str,
    command: list[str],
    *,
    user: str,
    port: int,
    forward_agent: bool,
    strict: bool,
    known_hosts: str,
    timeout: float,
    tunnel: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The system ssh client's command line for `fleetctl ssh`, the SSH fallback of status and
    journal, and the --tunnel (`extra`: more options, e.g. -N and a forward)."""
    argv = ["ssh", "-l", user, "-p", str(port)]
    if forward_agent:
        argv.append("-A")
    if strict:
        # OpenSSH's "ask" is fleet's behaviour: prompt for an unknown host, refuse a changed key.
        argv += ["-o", "StrictHostKeyChecking=ask", "-o", f"UserKnownHostsFile={known_hosts}"]
    else:
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    argv += ["-o", f"ConnectTimeout={max(1, round(timeout))}"]
    if tunnel:
        argv += ["-J", tunnel]
    argv += extra
    if not command and "-N" not in extra:
        argv.append("-t")
    argv.append(address)
    if command:
        argv.append("--")
        argv += command
    return argv
