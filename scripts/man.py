#!/usr/bin/env python3
"""Write the man pages of fleetctl(1) and fleetd(8), made from the click definitions.

    python scripts/man.py [DIRECTORY]        (default: man/; `make man` runs it)

Every command, option, default, example and environment variable comes from the code
(`fleetd.cli.fleetctl` and its `EXAMPLES`, `fleetd.main.fleetd`, `fleetd.config.OPTIONS`), so
the pages cannot drift from `--help`. roff is written by hand (the `man` macros), with no
dependency beyond click. The date in the header is SOURCE_DATE_EPOCH's when set (reproducible
builds), else today's.
"""

from __future__ import annotations

import datetime as dt
import inspect
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from fleetd import __version__
from fleetd.cli import EXAMPLES, fleetctl
from fleetd.config import OPTIONS, OnReload
from fleetd.main import fleetd

__all__ = ["fleetctl_page", "fleetd_page", "main", "roff"]

ON_RELOAD = {
    OnReload.APPLIED: "SIGHUP applies a new value at once.",
    OnReload.RESTART: "A new value takes effect at the next start (SIGHUP reports it).",
    OnReload.UNUSED: "Accepted for compatibility with fleet; no effect.",
}


def roff(text: str) -> str:
    """Text as roff reads it literally: backslashes and dashes escaped (help2man's way, so
    flags copy and paste), a line never starting with a control character, and a break point
    after each comma inside a word (long lists of fields wrap)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r",(?=\S)", ",\\:", text)
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%d")


def _header(name: str, section: int, title: str) -> list[str]:
    return [
        f'.TH {name.upper()} {section} "{_date()}" "fleetd {__version__}" "{title}"',
        ".ad l",  # ragged right: long flag values and URLs are never stretched
        ".nh",  # no hyphenation: flags, commands and option names stay whole
        ".SH NAME",
        f"{name} \\- {roff(_summary(name))}",
    ]


def _summary(name: str) -> str:
    return {
        "fleetctl": "command-line client of fleet, the cluster-wide init system",
        "fleetd": "fleet's daemon: agent, engine and API of one machine of the cluster",
    }[name]


def _paragraphs(text: str) -> list[str]:
    """click help text (paragraphs, `\\b` blocks kept as they are) as roff."""
    out: list[str] = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b\n"):
            out += [".PP", ".nf", roff(block[2:]), ".fi"]
        else:
            out += [".PP", roff(" ".join(block.split()))]
    return out


def _ctx(command: click.Command, name: str, parent: click.Context | None = None) -> click.Context:
    return click.Context(command, info_name=name, parent=parent, **command.context_settings)


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    """One `.TP` entry per option, as `--help` shows it (hidden ones left out)."""
    out: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None:
            continue
        spec, help_text = record
        out += [".TP", f"\\fB{roff(spec)}\\fR", roff(help_text) if help_text else ""]
    return out


def _walk(
    group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = _ctx(command, name, ctx)
        yield (*path, name), command, sub
        if isinstance(command, click.Group):
            yield from _walk(command, sub, (*path, name))


def _commands(program: str, group: click.Group, ctx: click.Context) -> list[str]:
    out = [".SH COMMANDS"]
    for path, command, sub in _walk(group, ctx):
        usage = " ".join(command.collect_usage_pieces(sub))
        out += [".SS " + roff(" ".join(path)), ".nf", f"\\fB{program} {roff(' '.join(path))}\\fR "
                + roff(usage), ".fi"]  # fmt: skip
        help_text = command.help or command.short_help or ""
        if help_text:
            out += _paragraphs(help_text)
        options = _options(command, sub)
        if any(line.startswith("\\fB") for line in options):
            out += [".PP", "Options:", ".RS", *options, ".RE"]
        examples = EXAMPLES.get(path[0]) if program == "fleetctl" and len(path) == 1 else None
        if examples:
            out += [".PP", "Example:" if len(examples) == 1 else "Examples:", ".RS", ".nf"]
            out += [roff(line) for line in examples] + [".fi", ".RE"]
    return out


def fleetctl_page() -> str:
    ctx = _ctx(fleetctl, "fleetctl")
    env = [
        (param.envvar, param.opts[0])
        for param in fleetctl.params
        if isinstance(param, click.Option) and isinstance(param.envvar, str)
    ]
    lines = [
        *_header("fleetctl", 1, "fleetd manual"),
        ".SH SYNOPSIS",
        "\\fBfleetctl\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR...]",
        ".SH DESCRIPTION",
        roff(
            "fleetctl talks to the fleet API of a fleetd (a unix socket, or HTTPS with client "
            "certificates) to submit, schedule, start, stop and inspect units across the "
            "cluster. Its commands, flags, messages and tables are fleet 1.0's. A command may "
            "be abbreviated by any unique prefix (fleetctl list-m)."
        ),
        ".SH GLOBAL OPTIONS",
        *_options(fleetctl, ctx),
        *_commands("fleetctl", fleetctl, ctx),
        ".SH ENVIRONMENT",
        roff("Each global option may be given as a variable; the command line wins."),
    ]
    for var, flag in env:
        lines += [".TP", f"\\fB{roff(var)}\\fR", roff(flag)]
    lines += [
        ".SH SHELL COMPLETION",
        ".nf",
        roff("source <(fleetctl completion bash)"),
        roff("source <(fleetctl completion zsh)"),
        roff("fleetctl completion fish > ~/.config/fish/completions/fleetctl.fish"),
        ".fi",
        ".SH EXIT STATUS",
        roff("0 on success; 1 when a command fails; 2 for a usage error."),
        ".SH SEE ALSO",
        "\\fBfleetd\\fR(8)",
    ]
    return "\n".join(lines) + "\n"


def fleetd_page() -> str:
    ctx = _ctx(fleetd, "fleetd")
    lines = [
        *_header("fleetd", 8, "fleetd manual"),
        ".SH SYNOPSIS",
        "\\fBfleetd\\fR [\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fIOPTIONS\\fR]",
        ".br",
        "\\fBfleetd\\fR \\fICOMMAND\\fR [\\fIARGS\\fR...]",
        ".SH DESCRIPTION",
        *_paragraphs(fleetd.help or ""),
        ".SH OPTIONS",
        roff(
            "Each option is also a line of the configuration file (name=value) and a FLEET_ "
            "environment variable; flags win over variables, variables over the file, the "
            "file over the defaults. An unknown option in the file or a malformed value stops "
            "fleetd; an unknown FLEET_ variable is logged as a warning."
        ),
    ]
    by_flag = {o.flag: o for o in OPTIONS}
    for param in fleetd.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None:
            continue
        spec, help_text = record
        lines += [".TP", f"\\fB{roff(spec)}\\fR", roff(help_text)]
        option = by_flag.get(param.opts[0])
        if option is not None:
            lines += [".br", roff(f"fleet.conf: {option.name}. {ON_RELOAD[option.on_reload]}")]
    group_ctx = _ctx(fleetd, "fleetd")
    lines += _commands("fleetd", fleetd, group_ctx)
    lines += [
        ".SH SIGNALS",
        ".TP",
        "\\fBSIGHUP\\fR",
        roff(
            "Read the configuration again. These options apply at once: "
            + ", ".join(o.name for o in OPTIONS if o.on_reload is OnReload.APPLIED)
            + " (the machine is registered again with its new metadata and reservations; the "
            "TLS files are re-read even when their names did not change). The others wait for "
            "a restart. One log event, fleetd.configuration_reloaded, lists which were applied "
            "and which need a restart."
        ),
        ".TP",
        "\\fBSIGTERM\\fR, \\fBSIGINT\\fR",
        roff(
            "Stop; units keep running and the machine's lease runs out, so a restart within "
            "agent_ttl changes nothing (with leave_on_shutdown, leave instead)."
        ),
        ".TP",
        "\\fBSIGUSR2\\fR",
        roff("Leave the cluster (fleetd leave): stop local units, revoke the lease, exit."),
        ".SH FILES",
        ".TP",
        "\\fB/etc/fleet/fleet.conf\\fR",
        roff("The configuration file (one name=value per line; # and ; comments)."),
        ".TP",
        "\\fB/var/run/fleet.sock\\fR",
        roff("The API's unix socket (api_socket)."),
        ".TP",
        "\\fB/run/fleet\\fR",
        roff("runtime_dir: the lease IDs kept across restarts, the PID file."),
        ".SH SEE ALSO",
        "\\fBfleetctl\\fR(1), \\fBsystemd\\fR(1)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    directory = Path(argv[1] if len(argv) > 1 else "man")
    directory.mkdir(parents=True, exist_ok=True)
    for name, page in (("fleetctl.1", fleetctl_page()), ("fleetd.8", fleetd_page())):
        (directory / name).write_text(page)
        print(directory / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
