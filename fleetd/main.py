"""`fleetd`: run the daemon (flags for every fleet.conf option), and its helper commands:
`fleetd ctl ...` (fleetctl), `fleetd leave`, `fleetd version`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from fleetd import __version__
from fleetd.config import OPTIONS, Option
from fleetd.pki import pki as pki_commands


class ConfigFlag(click.Option):
    """A fleet.conf option as a flag. fleet's spelling with underscores (`--etcd_servers`) is
    accepted too but not listed: the help shows one line per option, with its default and its
    environment variable. Its value is handed to the configuration as given (flags > FLEET_*
    variables > file > defaults), so click neither reads the variable nor fills the default."""

    def __init__(self, option: Option) -> None:
        names = dict.fromkeys([option.flag, "--" + option.name])
        extra = [f"default: {option.default}"] if option.default else []
        super().__init__(
            list(names),
            default=None,
            metavar=option.metavar,
            help=f"{option.help}  [{'; '.join([*extra, f'env: {option.env}'])}]",
            hidden=option.deprecated,
        )
        self.option = option

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if self.hidden:
            return None
        return f"{self.option.flag} {self.option.metavar}", self.help or ""


def _option_flags(func):  # type: ignore[no-untyped-def]
    """One flag per fleet.conf option (`--etcd-servers`, and fleet's `--etcd_servers`)."""
    for option in reversed(OPTIONS):  # click lists decorated params in reverse
        func.__click_params__ = [*getattr(func, "__click_params__", []), ConfigFlag(option)]
    return func


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", message="fleetd version %(version)s")
@click.option(
    "--config",
    "config_path",
    default=None,
    metavar="FILE",
    help="configuration file (default /etc/fleet/fleet.conf when it exists)",
)
@_option_flags
@click.pass_context
def fleetd(ctx: click.Context, config_path: str | None, **options: str | None) -> None:
    """fleetd: the cluster-level init system's daemon. Without a command, run it.

    Every option is a line of the configuration file (`agent_ttl=10s`), a FLEET_<OPTION>
    environment variable (FLEET_AGENT_TTL=10s) and a flag (--agent-ttl=10s); flags win over
    variables, variables over the file, the file over the defaults. SIGHUP re-reads them
    (docs/configuration.md says which take effect at once).

    \b
    Example:
      fleetd --etcd-servers=https://10.0.0.1:2379 --metadata=role=web,region=eu
    """
    if ctx.invoked_subcommand is not None:
        return
    from fleetd.daemon import run

    flags = {name: value for name, value in options.items() if value is not None}
    sys.exit(run(config_path, flags))


@fleetd.command()
def version() -> None:
    """Print the version and exit."""
    click.echo(f"fleetd version {__version__}")


@fleetd.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctl(args: tuple[str, ...]) -> None:
    """Run fleetctl: `fleetd ctl list-units` is `fleetctl list-units`."""
    from fleetd import cli

    sys.exit(cli.main(list(args)))


@fleetd.command()
@click.option(
    "--runtime-dir",
    default="/run/fleet",
    show_default=True,
    help="the running fleetd's runtime_dir",
)
def leave(runtime_dir: str) -> None:
    """Make this machine's running fleetd leave the cluster: its units stop here and the
    engine places them elsewhere at once; then fleetd exits."""
    pid_file = Path(runtime_dir) / "fleetd.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGUSR2)
    except (OSError, ValueError) as err:
        raise click.ClickException(f"no running fleetd found through {pid_file}: {err}") from None
    click.echo(f"fleetd (pid {pid}) is leaving the cluster")


# ---- fleetd sandbox: a local multi-machine cluster -----------------------------------------

_dir_option = click.option(
    "--dir",
    "directory",
    default=None,
    metavar="DIR",
    help="the sandbox's directory (default: a fixed per-user location); several can coexist",
)


def _sandbox(directory: str | None):  # type: ignore[no-untyped-def]
    from fleetd.sandbox.cluster import Sandbox

    return Sandbox(directory)


def _run_sandbox(coro) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from fleetd import logs
    from fleetd.errors import FleetdError

    logs.configure(0, json=False, stream=open(os.devnull, "w"))
    try:
        asyncio.run(coro)
    except FleetdError as err:
        raise click.ClickException(str(err)) from None


def _duration(text: str) -> float:
    from fleetd.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@fleetd.group()
def sandbox() -> None:
    """A local cluster: a real etcd and several namespaced machines, each running fleetd."""


@sandbox.command()
@_dir_option
@click.option("--machines", default=3, show_default=True, help="how many machines")
@click.option(
    "--metadata",
    multiple=True,
    metavar="K=V,...",
    help="metadata of one machine, in order (repeat per machine); default machine=mN "
    "and a role cycling web/db/misc",
)
@click.option(
    "--agent-ttl",
    default="5s",
    show_default=True,
    help="each machine's agent_ttl and engine_ttl: 5 or 5s",
)
@click.option(
    "--tls",
    is_flag=True,
    help="etcd over TLS with client certificates and etcd auth: makes a CA and certificates "
    "in DIR/pki, a root user and a `fleet` user limited to /fleet/; each fleetd gets its own "
    "certificate and reads the password from DIR/pki/fleet.conf (mode 0600)",
)
@click.option(
    "--memory",
    multiple=True,
    metavar="SIZE,...",
    help="memory of each machine, in order (1G,2G,4G; or repeat per machine): a limit of its "
    "cgroup, which its fleetd measures (fleet.memory); machines past the list have none",
)
@click.option(
    "--cpus",
    multiple=True,
    metavar="N,...",
    help="CPUs of each machine, in order (0.5,1,2): a CPU quota of its cgroup, which its "
    "fleetd measures (fleet.cpus)",
)
@click.option(
    "--reserved-memory",
    multiple=True,
    metavar="SIZE,...",
    help="each machine's fleet.conf reserved_memory, in order (fleet.memory-reserved)",
)
@click.option(
    "--reserved-cpu",
    multiple=True,
    metavar="N,...",
    help="each machine's fleet.conf reserved_cpu, in order (fleet.cpus-reserved)",
)
def up(
    directory: str | None,
    machines: int,
    metadata: tuple[str, ...],
    agent_ttl: str,
    tls: bool,
    memory: tuple[str, ...],
    cpus: tuple[str, ...],
    reserved_memory: tuple[str, ...],
    reserved_cpu: tuple[str, ...],
) -> None:
    """Start the sandbox (harmless when it already runs) and print the line to use it."""
    from fleetd.sandbox.cluster import SandboxError
    from fleetd.sandbox.sizes import sizes_of

    box = _sandbox(directory)
    sizes = []
    if memory or cpus or reserved_memory or reserved_cpu:
        try:
            sizes = sizes_of(machines, memory, cpus, reserved_memory, reserved_cpu)
        except SandboxError as err:
            raise click.ClickException(str(err)) from None
    _run_sandbox(box.up(machines, list(metadata), _duration(agent_ttl), tls=tls, sizes=sizes))
    for line in box.status_lines():
        click.echo(line)


@sandbox.command()
@_dir_option
def status(directory: str | None) -> None:
    """Show the sandbox's machines and processes."""
    box = _sandbox(directory)
    try:
        lines = box.status_lines()
    except Exception as err:
        raise click.ClickException(str(err)) from None
    for line in lines:
        click.echo(line)


@sandbox.command()
@_dir_option
def down(directory: str | None) -> None:
    """Stop everything the sandbox started and remove its directory."""
    box = _sandbox(directory)
    _run_sandbox(box.down())
    click.echo(f"sandbox at {box.dir} is down")


@sandbox.command()
@_dir_option
@click.option(
    "--metadata",
    default=None,
    metavar="K=V,...",
    help="the machine's metadata (default machine=mN and the next role of web/db/misc)",
)
@click.option(
    "--fleetd",
    "fleetd_program",
    default=None,
    metavar="PATH",
    help="the fleetd the machine runs: an executable, by its absolute path as the machine sees "
    "it (default: this fleetd's Python), e.g. the self-contained fleetd of `make bundle`",
)
@click.option(
    "--mount-namespace",
    default=None,
    metavar="FILE",
    help="make the machine's mount namespace from this one (/proc/PID/ns/mnt), not from this "
    "shell's: the machine sees what is mounted there, e.g. a systemd-sysext image merged on /usr",
)
def add(
    directory: str | None,
    metadata: str | None,
    fleetd_program: str | None,
    mount_namespace: str | None,
) -> None:
    """Join one more machine to the running sandbox (its own systemd, the sandbox's etcd)."""
    box = _sandbox(directory)
    result = {}

    async def act() -> None:
        result["record"] = await box.add(metadata, fleetd_program, mount_namespace)

    _run_sandbox(act())
    record = result["record"]
    click.echo(f"{record.name} ({record.legend}): add done")


def _machine_command(name: str, verb: str, doc: str):  # type: ignore[no-untyped-def]
    @sandbox.command(name=name, help=doc)
    @_dir_option
    @click.argument("machine")
    def command(directory: str | None, machine: str) -> None:
        box = _sandbox(directory)
        result = {}

        async def act() -> None:
            result["record"] = await getattr(box, verb)(machine)

        _run_sandbox(act())
        record = result["record"]
        click.echo(f"{record.name} ({record.legend}): {verb} done")

    return command


_machine_command("kill", "kill", "The machine dies: its fleetd, systemd and every unit process.")
_machine_command("start", "start", "Bring a killed machine back with the same machine ID.")
_machine_command(
    "restart", "restart", "Restart only the machine's fleetd (SIGTERM); units keep running."
)


@sandbox.command(
    name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@_dir_option
@click.argument("machine")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(directory: str | None, machine: str, argv: tuple[str, ...]) -> None:
    """Run a command inside a machine: `fleetd sandbox exec m1 -- fleetctl list-units`."""
    from fleetd.sandbox.cluster import run_in_machine

    box = _sandbox(directory)
    try:
        code = run_in_machine(box, machine, argv)
    except Exception as err:
        raise click.ClickException(str(err)) from None
    sys.exit(code)


# ---- fleetd pki: the CA and certificates of a cluster on real hosts (fleetd/pki.py) ---------
fleetd.add_command(pki_commands, name="pki")


def main() -> None:
    fleetd(prog_name="fleetd")


if __name__ == "__main__":
    main()
