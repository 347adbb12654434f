"""`--help` of fleetctl and fleetd, run as a user runs them (the installed entry points).

fleetctl: every command's help ends with an example that parses with the real definitions; the
group's help lists every FLEETCTL_* variable. fleetd: one entry per fleet.conf option (fleet's
`--name_with_underscores` accepted but not listed), each with its default and its variable.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fleetd.cli import EXAMPLES, fleetctl
from fleetd.config import OPTIONS

BIN = Path(sys.executable).parent
COMMANDS = sorted(fleetctl.commands)


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "FLEETCTL_"))}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, check=False,
        env={**clean, "COLUMNS": "100", **(env or {})},
    )  # fmt: skip


def test_every_command_has_an_example() -> None:
    assert set(EXAMPLES) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_ends_with_its_example(command: str) -> None:
    for argv in (["help", command], [command, "--help"]):
        done = run(str(BIN / "fleetctl"), *argv)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        tail = done.stdout.rstrip("\n").split("\n\n")[-1].splitlines()
        assert tail[0].strip() in ("Example:", "Examples:")
        assert [line.strip() for line in tail[1:]] == list(EXAMPLES[command])


def _argv(example: str) -> list[str] | None:
    """The fleetctl arguments of an example line (None for a shell line such as `source`)."""
    words = shlex.split(example, comments=True)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value before the command
        words.pop(0)
    if not words or words[0] != "fleetctl":
        return None
    return words[1 : words.index(">")] if ">" in words else words[1:]


EXAMPLE_LINES = [line for lines in EXAMPLES.values() for line in lines]


@pytest.mark.parametrize("example", EXAMPLE_LINES)
def test_each_example_parses_with_the_real_definitions(example: str) -> None:
    argv = _argv(example)
    if argv is None:
        assert example.startswith("source <(fleetctl completion ")
        argv = example.removeprefix("source <(fleetctl ").split(")")[0].split()
    ctx = click.Context(fleetctl, info_name="fleetctl")
    rest = click.Command.parse_args(fleetctl, ctx, argv)  # the global flags
    name, command, rest = fleetctl.resolve_command(ctx, rest)
    assert command is not None and name in EXAMPLES
    command.make_context(name, rest, parent=ctx)  # raises a UsageError if the example lies


def test_group_help_lists_the_fleetctl_variables_and_an_example() -> None:
    done = run(str(BIN / "fleetctl"), "--help")
    assert done.returncode == 0
    text = done.stdout
    section = text[text.index("Environment") :]
    for param in fleetctl.params:
        if isinstance(param, click.Option) and param.envvar:
            assert re.search(rf"^\s+{param.envvar}\s+{param.opts[0]}$", section, re.M), param.envvar
    assert "Examples:\n    fleetctl list-machines\n" in text


def test_the_group_example_with_a_variable_parses() -> None:
    lines = "FLEETCTL_ENDPOINT=https://10.0.0.1:49153 fleetctl --ca-file ca.pem \\\n  --cert-file me.pem --key-file me-key.pem list-units"
    done = run(str(BIN / "fleetctl"), "--help")
    assert "FLEETCTL_ENDPOINT=https://10.0.0.1:49153 fleetctl --ca-file ca.pem \\" in done.stdout
    argv = _argv(lines.replace("\\\n", " "))
    assert argv is not None
    ctx = click.Context(fleetctl, info_name="fleetctl")
    assert click.Command.parse_args(fleetctl, ctx, argv) == ["list-units"]


# --- fleetd ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleetd_help() -> str:
    done = run(str(BIN / "fleetd"), "--help")
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout


def _entries(text: str) -> dict[str, str]:
    """`--flag METAVAR  help...` entries of the Options section, by flag (continuations joined)."""
    options = text[text.index("Options:") : text.index("Commands:")]
    entries: dict[str, str] = {}
    flag = ""
    for line in options.splitlines()[1:]:
        m = re.match(r"^  (-\S+(?:, -\S+)*)(?: (\S+))?(?:\s{2,}(.*))?$", line)
        if m is not None:
            flag = m.group(1)
            assert flag not in entries, f"{flag} listed twice"
            entries[flag] = m.group(3) or ""
        else:
            entries[flag] += " " + line.strip()
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_fleetd_help_lists_each_option_once_with_default_and_variable(fleetd_help: str) -> None:
    entries = _entries(fleetd_help)
    for option in OPTIONS:
        if option.deprecated:  # accepted and ignored with a warning: not advertised
            assert option.flag not in entries
            continue
        help_text = entries[option.flag]
        assert f"env: {option.env}]" in help_text, option.name
        assert (f"[default: {option.default};" in help_text) == bool(option.default), option.name
    assert not any("_" in flag for flag in entries), "fleet's underscore spelling is not listed"


@pytest.mark.parametrize(
    ("flag", "option"), [("--agent_ttl", "agent_ttl"), ("--engine-ttl", "engine_ttl")]
)
def test_fleetd_accepts_both_spellings_of_a_flag(flag: str, option: str) -> None:
    # a bad value reaches the configuration, which names the option: the flag was accepted
    done = run(str(BIN / "fleetd"), f"{flag}=soon")
    assert done.returncode == 2
    assert f"invalid value for {option}" in done.stderr
