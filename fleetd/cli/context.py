"""What every fleetctl command shares: the global flags, the API client, failures, options.
(Waiting for units and reporting how it ended: fleetd/cli/waiting.py.)

Stdlib and click only at import time: the API client is imported when a command first needs
it, so `fleetctl version` and `fleetctl help` start without loading any HTTP machinery.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from fleetd.cli.failure import Failure

__all__ = [
    "ATTEMPT_SECONDS",
    "DEFAULT_SETTLE",
    "Failure",
    "Settings",
    "api_error_line",
    "api_failure",
    "block_options",
    "echo_lines",
    "emit_json",
    "require_units",
    "settings",
    "unit_options",
]

# One fleet "block attempt" polled for up to 2 s (defaultSleepTime); --block-attempts=N waits
# N times that long in total.
ATTEMPT_SECONDS = 2.0
# How long a service whose start ends at fork/exec (Type=simple, exec, idle) must stay active
# before `start` reports it launched: a process that dies at once is reported as failed.
DEFAULT_SETTLE = 1.0
DEFAULT_ENDPOINT = "unix:///var/run/fleet.sock"


@dataclass
class Settings:
    """The global flags, as given (or from FLEETCTL_* variables)."""

    endpoint: str = DEFAULT_ENDPOINT
    request_timeout: float = 3.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tunnel: str = ""
    strict_host_key_checking: bool = True
    known_hosts_file: str = "~/.fleetctl/known_hosts"
    ssh_username: str = "core"
    ssh_timeout: float = 10.0
    debug: bool = False
    # Where a flag's value came from when not the command line: {"ca_file": "FLEETCTL_CA_FILE"}.
    from_env: dict[str, str] = field(default_factory=dict, repr=False)
    _client: Any = field(default=None, repr=False)
    _tunnel: Any = field(default=None, repr=False)

    def origin(self, flag: str) -> str:
        """How the user gave a global flag (`ca_file`): `--ca-file` or `FLEETCTL_CA_FILE`."""
        return self.from_env.get(flag) or "--" + flag.replace("_", "-")

    def client(self) -> Any:
        """The API client for --endpoint (created on first use), through --tunnel if given.

        An endpoint or TLS file it cannot use is a Failure naming the flag (or variable) and
        the value: `Error: --ca-file /x/ca.pem: No such file or directory`.
        """
        if self._client is None:
            from fleetd.api.client import BadEndpoint, BadTLSFile, Client

            endpoint = self.endpoint.split(",")[0]  # fleet uses the first of a list
            tunnel = self._open_tunnel() if self.tunnel else None
            try:
                client = Client(
                    endpoint,
                    timeout=self.request_timeout,
                    ca_file=self.ca_file or None,
                    cert_file=self.cert_file or None,
                    key_file=self.key_file or None,
                    via=tunnel.socket if tunnel is not None else None,
                )
            except BadTLSFile as err:
                flag = self.origin(err.option)
                raise Failure(f"Error: {flag} {err.path}: {err.reason}") from None
            except BadEndpoint as err:
                flag = self.origin("endpoint")
                if repr(endpoint) not in err.message:  # fleet's messages do not name it
                    flag += f" {endpoint or chr(34) * 2}"  # an empty one shown as ""
                raise Failure(
                    f"Error: {flag}: {err.message} "
                    "(use unix:///path, http://host:port or https://host:port)"
                ) from None
            if tunnel is not None:
                tunnel.open(self, endpoint)  # the endpoint is valid: now start ssh
            self._client = client
        return self._client

    def _open_tunnel(self) -> Any:
        from fleetd.cli.tunnel import Tunnel  # only with --tunnel: loads subprocess, ctypes

        self._tunnel = Tunnel()
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.find_root().call_on_close(self.close_tunnel)
        else:  # used outside a fleetctl command
            import atexit

            atexit.register(self.close_tunnel)
        return self._tunnel

    def close_tunnel(self) -> None:
        """Stop the --tunnel's ssh (when the command ends, or before it execs another one)."""
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None

    def debug_log(self, message: str) -> None:
        if self.debug:
            click.echo(f"DEBUG: {message}", err=True)


ENDPOINT_HINT = "is fleetd running? set FLEETCTL_ENDPOINT or --endpoint"


def api_error_line(err: Any) -> str:
    """The one line for an API client error no command reported in its own words.

    An API nobody serves (CannotConnect) gets the hint where to point fleetctl; other
    failures to reach it (lost, TLS, permission) name the endpoint already; an answer of the
    API shows its HTTP code.
    """
    from fleetd.api.client import CannotConnect

    if isinstance(err, CannotConnect):
        return f"Error: {err.message}; {ENDPOINT_HINT}"
    if err.code == 0:
        return f"Error: {err.message}"
    return f"Error: {err.message} (HTTP {err.code})"


def api_failure(prefix: str, err: Exception) -> Failure:
    """A command's failure on an API error: `prefix: the API's message`, or the one line of an
    API nobody serves, whatever the command was doing."""
    from fleetd.api.client import CannotConnect

    if isinstance(err, CannotConnect):
        return Failure(api_error_line(err))
    return Failure(f"{prefix}: {getattr(err, 'message', None) or err}")


def settings() -> Settings:
    """The Settings of the running command."""
    ctx = click.get_current_context()
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def require_units(args: tuple[str, ...]) -> None:
    if not args:
        raise Failure("No units given")


def unit_options(unit: Any) -> list[dict[str, str]]:
    """A UnitFile's options as the API carries them."""
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit.options]


def block_options(*, lines: bool = False, settle: bool = False) -> Any:
    """The options of a command that waits for its units: --no-block and --block-attempts;
    with `lines`, --lines (the journal of each unit that failed); with `settle`, --settle."""
    options = [
        click.option(
            "--no-block",
            is_flag=True,
            help="Do not wait until the units have reached the requested state.",
        ),
        click.option(
            "--block-attempts",
            type=int,
            default=0,
            show_default=True,
            help="Wait until the units reach the requested state, at most N x 2 s (0: forever).",
        ),
    ]
    if lines:
        options.append(
            click.option(
                "--lines",
                type=click.IntRange(min=0),
                default=10,
                show_default=True,
                help="Journal lines to show of each unit that failed (0: none).",
            )
        )
    if settle:
        options.append(
            click.option(
                "--settle",
                type=click.FloatRange(min=0, max=600),
                default=DEFAULT_SETTLE,
                show_default=True,
                help="Seconds a newly started simple service must stay active before it counts "
                "as launched (a process that dies at once is a failure); 0 turns it off.",
            )
        )

    def decorate(f: Any) -> Any:
        for option in reversed(options):  # the first option listed first in --help
            f = option(f)
        return f

    return decorate


def block_timeout(no_block: bool, block_attempts: int) -> float | bool | None:
    """False for --no-block, None to wait forever (0 attempts), else seconds."""
    if no_block:
        return False
    if block_attempts > 0:
        return block_attempts * ATTEMPT_SECONDS
    return None


def echo_lines(lines: Iterable[Any]) -> None:
    """Print a plan's lines (`fleetd.reconcile.submit.Line`): each on stdout, or on stderr."""
    for line in lines:
        click.echo(line.text, err=line.stderr)
