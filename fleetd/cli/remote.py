"""Commands about a unit's machine: status and journal (through the API), ssh (system client)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from fleetd.cli.complete import registered_units
from fleetd.cli.context import Failure, emit_json, settings
from fleetd.cli.ssh import ssh_argv

__all__ = ["COMMANDS", "journal_text_over_ssh"]


def _ssh_port(what: str) -> Any:
    """The --ssh-port option of a command whose fallback runs `what` on the machine over SSH."""
    return click.option(
        "--ssh-port",
        type=int,
        default=22,
        show_default=True,
        help="Connect to remote hosts over SSH using this TCP port (when the API cannot reach "
        f"the unit's machine, {what} runs there over SSH).",
    )


@click.command(help="Output the status of one or more units in the cluster")
@_ssh_port("`systemctl status`")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="text or json.")
@click.argument("units", nargs=-1, shell_complete=registered_units)
def status(units: tuple[str, ...], ssh_port: int, output: str) -> None:
    from fleetd.api.client import APIError, MachineUnreachable, Unreachable
    from fleetd.unit import mangle_name

    if not units:
        raise Failure("No units given")
    client = settings().client()
    results: list[dict[str, str]] = []
    failures: list[str] = []
    printed = 0
    for arg in dict.fromkeys(mangle_name(u) for u in units):
        try:
            text = client.status(arg)
        except Unreachable:
            raise
        except MachineUnreachable as err:  # fleet's way: systemctl status there, over SSH
            if printed and output != "json":
                click.echo("")
            code, text = _status_over_ssh(arg, err, ssh_port, capture=output == "json")
            if output == "json":
                results.append({"name": arg, "status": text})
            printed += 1
            if code != 0:  # as fleet: the remote command's exit status is ours; stop there
                if output == "json":
                    emit_json(results)
                raise Failure("", exit_code=code) from None
            continue
        except APIError as err:
            failures.append(err.message or str(err))
            click.echo(err.message or str(err), err=True)
            continue
        if output == "json":
            results.append({"name": arg, "status": text})
            continue
        if printed:
            click.echo("")  # a blank line between units, as fleet prints
        click.echo(text, nl=not text.endswith("\n"))
        printed += 1
    if output == "json":
        emit_json(results)
    if failures:
        raise Failure("")


@click.command(help="Print the journal of a unit in the cluster to stdout")
@click.option(
    "--lines", type=int, default=10, show_default=True, help="Number of recent log lines to return"
)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Continuously stream new entries as they are added to the journal",
)
@_ssh_port("`journalctl`")
@click.option(
    "--sudo",
    is_flag=True,
    help="Execute journalctl with sudo when it runs on the unit's machine over SSH.",
)
@click.option(
    "-m",
    "--machine",
    default="",
    help="The machine (ID or unique ID prefix) whose journal of a global unit to print "
    "(beyond fleet).",
)
@click.argument("units", nargs=-1, shell_complete=registered_units)
def journal(
    units: tuple[str, ...], lines: int, follow: bool, ssh_port: int, sudo: bool, machine: str
) -> None:
    from fleetd.api.client import APIError, MachineUnreachable, Unreachable
    from fleetd.reconcile.remote import journal_command, journal_machine_id, journal_refusal
    from fleetd.unit import mangle_name

    if len(units) != 1:
        raise Failure("One unit file must be provided.")
    name = mangle_name(units[0])
    out = sys.stdout.buffer
    stream: Any = None
    client = settings().client()
    try:
        machine_id = None
        if machine:
            ids = [m.get("id") or "" for m in client.machines()]
            machine_id = journal_machine_id(ids, machine)
        stream = client.journal(name, lines=lines, follow=follow, machine_id=machine_id)
        for chunk in stream:
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        pass  # Ctrl-C ends `journal -f`: a normal way out (exit 0)
    except Unreachable:
        raise
    except MachineUnreachable as err:  # fleet's way: journalctl there, over SSH
        command = journal_command(name, lines, sudo=sudo, follow=follow)
        _exec_over_ssh(_address_of(err), command, ssh_port)
    except APIError as err:
        raise Failure(journal_refusal(name, err.message or str(err), machine=machine)) from None
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _address_of(err: Any) -> str:
    """The public IP of the (first) machine the API could not reach, or a Failure."""
    from fleetd.reconcile.remote import plan_ssh_fallback

    fallback = plan_ssh_fallback(err.message, err.machines)
    if not fallback.addresses:
        raise Failure(fallback.problem)
    return fallback.addresses[0]


def _remote_argv(address: str, command: list[str], ssh_port: int) -> list[str]:
    """ssh running `command` on `address`, with the global SSH flags (as fleet: no agent
    forwarding for status and journal; through --tunnel with -J). Each word is quoted for
    the remote shell (unit names may hold backslashes)."""
    import shlex

    return _ssh_with_flags(address, [shlex.quote(word) for word in command], ssh_port, False)


def _ssh_with_flags(
    address: str, command: list[str], ssh_port: int, forward_agent: bool
) -> list[str]:
    """`ssh_argv` with the global SSH flags (user, host key checking, timeout, --tunnel)."""
    opts = settings()
    known_hosts = os.path.expanduser(opts.known_hosts_file)
    if opts.strict_host_key_checking:
        os.makedirs(os.path.dirname(known_hosts) or ".", mode=0o700, exist_ok=True)
    return ssh_argv(
        address,
        command,
        user=opts.ssh_username,
        port=ssh_port,
        forward_agent=forward_agent,
        strict=opts.strict_host_key_checking,
        known_hosts=known_hosts,
        timeout=opts.ssh_timeout,
        tunnel=opts.tunnel,
    )


def _status_over_ssh(name: str, err: Any, ssh_port: int, *, capture: bool) -> tuple[int, str]:
    """`systemctl status -l NAME` on each machine of the unit, over SSH, until one fails:
    (exit status, the text when captured for --output json)."""
    import subprocess

    from fleetd.reconcile.remote import plan_ssh_fallback, status_command

    fallback = plan_ssh_fallback(err.message, err.machines)
    texts: list[str] = []
    for number, ip in enumerate(fallback.addresses):
        argv = _remote_argv(ip, status_command(name), ssh_port)
        settings().debug_log(f"the API cannot reach the machine ({err.message}): running {argv}")
        if number and not capture:
            click.echo("")  # between the machines of a global unit
        sys.stdout.flush()  # what fleetctl printed comes before what ssh prints
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else None, check=False,
            )  # fmt: skip
        except OSError as exc:
            raise Failure(f"Failed building SSH client: {exc}") from None
        if capture:
            texts.append(done.stdout.decode("utf-8", "replace"))
        if done.returncode != 0:
            return done.returncode, "\n".join(texts)
    if fallback.problem:  # a machine whose IP is unknown: SSH cannot reach it either
        raise Failure(fallback.problem)
    return 0, "\n".join(texts)


def journal_text_over_ssh(name: str, err: Any, lines: int, ssh_port: int = 22) -> str:
    """The last `lines` journal lines of `name` on the machine the API could not reach, read
    with `journalctl` over SSH (the failure report of a waiting command); a Failure saying
    why when ssh cannot get them."""
    import subprocess

    from fleetd.reconcile.remote import journal_command

    argv = _remote_argv(_address_of(err), journal_command(name, lines), ssh_port)
    settings().debug_log(f"the API cannot reach the machine ({err.message}): running {argv}")
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as exc:
        raise Failure(f"Failed building SSH client: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise Failure(f"ssh exited {done.returncode}" + (f": {why[-1]}" if why else ""))
    return done.stdout.decode("utf-8", "replace")


def _exec_over_ssh(address: str, command: list[str], ssh_port: int) -> None:
    """Become ssh running `command` on `address`: its exit status is fleetctl's."""
    argv = _remote_argv(address, command, ssh_port)
    opts = settings()
    opts.debug_log(f"the API cannot reach the machine: running {argv}")
    opts.close_tunnel()  # the API is not needed any more; ssh jumps through --tunnel itself
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        raise Failure(f"Failed building SSH client: {err}") from None


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    help="Open interactive shell on a machine in the cluster",
)
@click.option(
    "-A", "--forward-agent", is_flag=True, help="Forward local ssh-agent to target machine."
)
@click.option(
    "-m", "--machine", default="", help="Open SSH connection to a specific machine (ID prefix)."
)
@click.option(
    "-u", "--unit", default="", help="Open SSH connection to the machine running this unit."
)
@click.option(
    "--ssh-port",
    type=int,
    default=22,
    show_default=True,
    help="Connect to remote hosts over this SSH port",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ssh(args: tuple[str, ...], forward_agent: bool, machine: str, unit: str, ssh_port: int) -> None:
    from fleetd.cli.output import listed_unit
    from fleetd.reconcile.remote import plan_ssh, ssh_query
    from fleetd.unit import mangle_name

    opts = settings()
    client = opts.client()
    query = ssh_query(args, machine=machine, unit=unit)
    if query.refusal:
        raise Failure(query.refusal)
    machines = {m.get("id") or "": m.get("primaryIP") or "" for m in client.machines()}
    found = client.unit(mangle_name(query.unit)) if query.unit is not None else None
    target = plan_ssh(query, machines, None if found is None else listed_unit(found))
    if target.refusal:
        raise Failure(target.refusal)
    argv = _ssh_with_flags(target.address, list(query.command), ssh_port, forward_agent)
    opts.debug_log(f"running {argv}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)  # ssh's exit status becomes ours
    except OSError as err:
        raise Failure(f"Failed building SSH client: {err}") from None


COMMANDS = [status, journal, ssh]
