"""fleetctl: fleet's command-line client.

Kept light on purpose (it must start in well under 150 ms): it imports click and the standard
library only; the API client and the unit model are imported inside the commands that need them.
One module per command group: submit (submit, load, start: they carry out the pure plan of
`fleetd.reconcile.submit`), units (stop, unload, destroy, restart, cat: the plans of
`fleetd.reconcile.lifecycle`), lists (list-*), remote (status, journal, ssh: where they go is
`fleetd.reconcile.remote`'s choice), metadata (set-metadata, unset-metadata: the plan of
`fleetd.reconcile.set_metadata`), drain (cordon, uncordon, drain: beyond fleet), why (why a unit
runs where it does, or nowhere: fleetd's `x/why`); output holds the table layout, files the
local unit files, context the shared flags, client and waiting, complete the shell completion
(`fleetctl completion bash|zsh|fish` and click's completion protocol, which `main` answers
first). Every command's help ends with an example (`EXAMPLES`); the group's lists the FLEETCTL_*
variables. The man page is made from these definitions (scripts/man.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any

import click
from click.core import ParameterSource

from fleetd import __version__
from fleetd.cli import (
    complete,
    dashboard,
    drain,
    lists,
    metadata,
    remote,
    rollout,
    submit,
    units,
    why,
)
from fleetd.cli.context import Failure, Settings, api_error_line

__all__ = ["EXAMPLES", "fleetctl", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": None}


class PrefixGroup(click.Group):
    """A group whose commands may be called by any unique prefix, as fleet's cobra CLI allows."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        matches = [name for name in self.list_commands(ctx) if name.startswith(cmd_name)]
        if len(matches) == 1:
            return super().get_command(ctx, matches[0])
        if len(matches) > 1 and not ctx.resilient_parsing:  # completing: nothing to resolve
            ctx.fail(f"ambiguous command {cmd_name!r}: could be {', '.join(sorted(matches))}")
        return None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _bare_flags_given_values(self, ctx, args))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else None), command, rest


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"fleetctl version {__version__}")
        ctx.exit(0)


def _env(flag: str) -> str:
    """fleet's getFlagsFromEnv: every global flag is also FLEETCTL_<FLAG>."""
    return "FLEETCTL_" + flag.upper().replace("-", "_")


_BOOL_TEXT = click.BOOL

# Global flags whose value is optional, as pflag's booleans: given bare they mean this value and
# never take the next argument (`--strict-host-key-checking list-units` runs list-units).
_BARE_VALUES = {"--strict-host-key-checking": "true"}


def _bare_flags_given_values(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    """The arguments with each bare optional-value flag before the command written `--flag=v`."""
    takes_value = {
        opt
        for param in group.get_params(ctx)
        if isinstance(param, click.Option) and not param.is_flag
        for opt in param.opts
    }
    out = list(args)
    i = 0
    while i < len(out):
        arg = out[i]
        if arg in _BARE_VALUES:
            out[i] = f"{arg}={_BARE_VALUES[arg]}"
        elif arg in takes_value:
            i += 1  # its value is the next argument
        elif arg == "--" or not arg.startswith("-"):
            break  # the command: its own arguments are left alone
        i += 1
    return out


_MAX_SECONDS = 86400


class _Seconds(click.ParamType):
    """A positive number of seconds, at most a day (`--request-timeout 0.5`)."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r} is not a positive number of seconds", param, ctx)
        if seconds > _MAX_SECONDS:  # the OS's timers end somewhere; a day is plenty
            self.fail(f"{value!r} is more than {_MAX_SECONDS} seconds (a day)", param, ctx)
        return seconds


@click.group(
    cls=PrefixGroup,
    context_settings=CONTEXT_SETTINGS,
    invoke_without_command=True,
    help=f"fleetctl is a command-line interface to fleet, the cluster-wide init system.\n\n"
    f"VERSION: {__version__}",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version and exit.",
)
@click.option(
    "--endpoint",
    default="unix:///var/run/fleet.sock",
    show_default=True,
    envvar=_env("endpoint"),
    help="Location of the fleet API (unix:///path, http://host:port or https://host:port).",
)
@click.option(
    "--request-timeout",
    type=_Seconds(),
    default=3.0,
    show_default=True,
    envvar=_env("request-timeout"),
    help="Seconds to allow a single request before considering it failed.",
)
@click.option(
    "--ca-file", default="", envvar=_env("ca-file"), help="TLS CA file for the fleet API."
)
@click.option(
    "--cert-file",
    default="",
    envvar=_env("cert-file"),
    help="TLS client certificate for the fleet API.",
)
@click.option(
    "--key-file", default="", envvar=_env("key-file"), help="TLS client key for the fleet API."
)
@click.option(
    "--tunnel",
    default="",
    envvar=_env("tunnel"),
    help="Establish an SSH tunnel through the provided address (host[:port]) for "
    "communication with fleet (the API is reached from there; ssh jumps through it).",
)
@click.option(
    "--strict-host-key-checking",
    type=_BOOL_TEXT,
    default=True,
    is_flag=False,
    flag_value=True,
    show_default=True,
    envvar=_env("strict-host-key-checking"),
    help="Verify host keys of remote machines (--strict-host-key-checking=false: do not).",
)
@click.option(
    "--known-hosts-file",
    default="~/.fleetctl/known_hosts",
    show_default=True,
    envvar=_env("known-hosts-file"),
    help="File used to store remote machine fingerprints.",
)
@click.option(
    "--ssh-username",
    default="core",
    show_default=True,
    envvar=_env("ssh-username"),
    help="Username to use when connecting to a machine.",
)
@click.option(
    "--ssh-timeout",
    type=_Seconds(),
    default=10.0,
    show_default=True,
    envvar=_env("ssh-timeout"),
    help="Seconds to allow for SSH connection initialization.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar=_env("debug"),
    help="Print out more debug information to stderr.",
)
@click.pass_context
def fleetctl(ctx: click.Context, **flags: object) -> None:
    from_env = {
        name: _env(name.replace("_", "-"))
        for name in flags
        if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT
    }
    ctx.obj = Settings(**flags, from_env=from_env)  # type: ignore[arg-type]
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@fleetctl.command(help="Print the version and exit")
def version() -> None:
    click.echo(f"fleetctl version {__version__}")


@fleetctl.command(name="help", help="Help about any command")
@click.argument("command", required=False, shell_complete=complete.command_names)
@click.pass_context
def help_(ctx: click.Context, command: str | None) -> None:
    parent = ctx.parent
    assert parent is not None
    if command is None:
        click.echo(parent.get_help())
        return
    group = parent.command
    assert isinstance(group, click.Group)
    sub = group.get_command(parent, command)
    if sub is None:
        raise click.UsageError(f"unknown command {command!r}", ctx=parent)
    with click.Context(sub, info_name=sub.name, parent=parent) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


@fleetctl.command(help="Print the shell completion script for bash, zsh or fish")
@click.argument("shell", type=click.Choice(complete.SHELLS))
def completion(shell: str) -> None:
    click.echo(complete.script(fleetctl, shell), nl=False)


for _command in (
    *submit.COMMANDS,
    *units.COMMANDS,
    *lists.COMMANDS,
    *remote.COMMANDS,
    *metadata.COMMANDS,
    *dashboard.COMMANDS,
    *why.COMMANDS,
    *rollout.COMMANDS,
    *drain.COMMANDS,
):
    fleetctl.add_command(_command)

# One example per command, shown at the end of its help (and in the man page).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "cat": ("fleetctl cat hello.service",),
    "cordon": ("fleetctl cordon 8197e13c",),
    "completion": (
        "source <(fleetctl completion bash)    # in ~/.bashrc",
        "source <(fleetctl completion zsh)     # in ~/.zshrc, after compinit",
        "fleetctl completion fish > ~/.config/fish/completions/fleetctl.fish",
    ),
    "dashboard": ("fleetctl dashboard --port 8080 --no-open",),
    "drain": ("fleetctl drain --stop-globals 8197e13c",),
    "destroy": ("fleetctl destroy hello.service apache@1.service",),
    "help": ("fleetctl help list-units",),
    "journal": ("fleetctl journal --follow --lines 50 hello.service",),
    "list-machines": ("fleetctl list-machines --full --fields machine,ip,metadata",),
    "list-unit-files": ("fleetctl list-unit-files --output json",),
    "list-units": ("fleetctl list-units --no-legend --fields unit,machine,active",),
    "load": ("fleetctl load apache@1.service apache@2.service",),
    "restart": ("fleetctl restart apache@1.service",),
    "rolling-replace": ("fleetctl rolling-replace web@.service",),
    "rollout": ("fleetctl rollout status web@.service",),
    "set-metadata": ("fleetctl set-metadata 8197e13c role=db disk=ssd",),
    "ssh": ("fleetctl ssh hello.service systemctl status hello.service",),
    "start": ("fleetctl start hello.service",),
    "status": ("fleetctl status hello.service",),
    "stop": ("fleetctl stop --no-block hello.service",),
    "submit": ("fleetctl submit --replace hello.service",),
    "uncordon": ("fleetctl uncordon 8197e13c",),
    "unload": ("fleetctl unload hello.service",),
    "unset-metadata": ("fleetctl unset-metadata 8197e13c disk",),
    "version": ("fleetctl version",),
    "why": ("fleetctl why apache@2.service",),
}


def _examples(lines: tuple[str, ...]) -> str:
    """An epilog click prints as is (`\\b`: not re-wrapped)."""
    return (
        "\b\n"
        + ("Example:" if len(lines) == 1 else "Examples:")
        + "".join(f"\n  {line}" for line in lines)
    )


def _environment(group: click.Group) -> str:
    """The group's epilog: every FLEETCTL_* variable and the flag it stands for."""
    pairs = [
        (param.envvar, param.opts[0])
        for param in group.params
        if isinstance(param, click.Option) and isinstance(param.envvar, str)
    ]
    width = max(len(var) for var, _ in pairs)
    return "\b\nEnvironment (a flag on the command line wins):" + "".join(
        f"\n  {var:<{width}}  {flag}" for var, flag in pairs
    )


for _name, _command in fleetctl.commands.items():
    _command.epilog = _examples(EXAMPLES[_name])
fleetctl.epilog = (
    _environment(fleetctl)
    + "\n\n"
    + _examples(
        (
            "fleetctl list-machines",
            "FLEETCTL_ENDPOINT=https://10.0.0.1:49153 fleetctl --ca-file ca.pem \\",
            "    --cert-file me.pem --key-file me-key.pem list-units",
        )
    )
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fleetctl` (and of `fleetd ctl`)."""
    answered = complete.answer(fleetctl)  # the shell asks what the typed words complete to
    if answered is not None:
        return answered
    try:
        with fleetctl.make_context("fleetctl", list(sys.argv[1:] if argv is None else argv)) as ctx:
            fleetctl.invoke(ctx)
    except click.exceptions.Exit as done:
        return done.exit_code
    except Failure as err:
        err.show()
        return err.exit_code
    except click.UsageError as err:  # one line, naming the flag or the variable at fault
        click.echo(f"Error: {_usage_message(err)}", err=True)
        return err.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`fleetctl journal -f | head`): not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as err:  # the API client's errors, reported in one line
        api = sys.modules.get("fleetd.api.client")
        if api is None or not isinstance(err, api.APIError):
            raise
        click.echo(api_error_line(err), err=True)
        return 1
    return 0


def _usage_message(err: click.UsageError) -> str:
    """click's message; a bad value from a FLEETCTL_* variable names the variable."""
    if isinstance(err, click.BadParameter) and err.ctx is not None and err.param is not None:
        name = err.param.name or ""
        if err.ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
            envvar = err.param.envvar
            err.param_hint = envvar if isinstance(envvar, str) else _env(name.replace("_", "-"))
    return err.format_message()


if __name__ == "__main__":
    sys.exit(main())
