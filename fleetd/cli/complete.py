"""Shell completion beyond what click completes by itself (commands, flags, choices).

`fleetctl completion bash|zsh|fish` prints click's script for the shell; the script calls
fleetctl back with `_FLEETCTL_COMPLETE=<shell>_complete` and the words typed so far, and
`fleetd.cli.main` answers through click's completion protocol (`answer`). What the arguments
complete to: submit, load and start take local unit files; the commands about registered units
take the cluster's unit names, asked of the API with a short timeout (nothing offered when it
cannot answer, never an error on the terminal, never an SSH tunnel for a TAB).

Standard library and click only, as the rest of fleetctl: the API client is imported only when
a unit name is completed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from fleetd.cli.failure import Failure

if TYPE_CHECKING:  # loaded only when the shell asks: fleetctl's other runs never import it
    from click.shell_completion import CompletionItem

__all__ = [
    "COMPLETE_VAR",
    "SHELLS",
    "answer",
    "command_names",
    "registered_units",
    "script",
    "unit_files",
]

COMPLETE_VAR = "_FLEETCTL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
_ASK_SECONDS = 1.0  # the longest a TAB waits for the API


def script(group: click.Command, shell: str) -> str:
    """click's completion script of `shell` for fleetctl."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # click.Choice has refused it already
        raise click.BadParameter(f"no completion for {shell!r}")
    return cls(group, {}, "fleetctl", COMPLETE_VAR).source()


def answer(group: click.Command) -> int | None:
    """When fleetctl runs for the shell's completion (`_FLEETCTL_COMPLETE` set), print what
    the typed words complete to and return the exit code; else None."""
    instruction = os.environ.get(COMPLETE_VAR)
    if not instruction:
        return None
    from click.shell_completion import shell_complete

    return shell_complete(group, {}, "fleetctl", COMPLETE_VAR, instruction)


def command_names(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`fleetctl help`: the commands."""
    from click.shell_completion import CompletionItem

    group = ctx.find_root().command
    assert isinstance(group, click.Group)
    names = group.list_commands(ctx)
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def unit_files(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """submit, load, start: the shell completes local file names."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


def registered_units(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The units of the cluster whose names start with what was typed."""
    from click.shell_completion import CompletionItem

    from fleetd.api.client import APIError
    from fleetd.cli.context import Settings

    flags = dict(ctx.find_root().params)
    if flags.get("tunnel"):
        return []
    flags["request_timeout"] = min(_ASK_SECONDS, flags.get("request_timeout") or _ASK_SECONDS)
    try:
        names = sorted(unit["name"] for unit in Settings(**flags).client().units())
    except (APIError, Failure, OSError, TypeError, KeyError):
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
