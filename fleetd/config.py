"""fleetd's configuration: fleet's option names, from file, `FLEET_*` environment and flags.

Precedence: command-line flags > environment > configuration file > defaults. Unknown options
in the file or the flags and malformed values are refused with a message naming the option and
where it came from; an unknown `FLEET_*` environment variable is only recorded
(`Config.unknown_variables`, logged as a warning), as fleet ignored them. `build_config` is pure
(text and mappings in, a frozen Config out) so every rule is testable; `load_config` only reads
the file. `reload_config` is the pure half of SIGHUP: which changed options take effect at once
(each option's `on_reload`) and which wait for a restart.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetd.rules.metadata import KEY_CHARACTERS, is_key, reserved_key
from fleetd.rules.sizes import cpus, size

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "MAX_LEASE_TTL",
    "OPTIONS",
    "Config",
    "ConfigError",
    "OnReload",
    "Option",
    "Reloaded",
    "build_config",
    "lease_seconds",
    "load_config",
    "parse_duration",
    "parse_metadata",
    "reload_config",
]

DEFAULT_CONFIG_FILE = "/etc/fleet/fleet.conf"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the option and its source."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from `30`, `30s`, `1.5`, `500ms`, `2m`, `1h30m` (Go durations, or plain seconds)."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (examples: 30s, 500ms, 2m)")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
        if match.group(2) is None and (pos < len(text) or match.start() > 0):
            raise ValueError(f"invalid duration {text!r} (examples: 30s, 500ms, 2m)")
    return total


def parse_metadata(text: str) -> dict[str, str]:
    """fleet's `metadata` option: `k=v,k2=v2`, whitespace trimmed, the last duplicate wins."""
    result: dict[str, str] = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"metadata entry {pair!r} is not key=value")
        if not is_key(key):
            raise ValueError(f"metadata key {key!r} may hold only {KEY_CHARACTERS}")
        if why := reserved_key(key):
            raise ValueError(why)
        result[key] = value
    return result


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on", "t"):
        return True
    if lowered in ("0", "false", "no", "off", "f", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _list(text: str) -> tuple[str, ...]:
    """fleet accepted `a,b` and also a JSON-ish `["a","b"]`."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = tuple(item.strip().strip('"').strip() for item in text.split(","))
    return tuple(item for item in items if item)


def _positive(parse: Callable[[str], float]) -> Callable[[str], float]:
    def checked(text: str) -> float:
        value = parse(text)
        if value <= 0:
            raise ValueError(f"must be greater than zero, got {text!r}")
        return value

    return checked


_duration = _positive(parse_duration)


def _size(text: str) -> int:
    found = size(text)
    if found is None:
        raise ValueError(f"not a size (bytes, or with K, M, G, T: 512M), got {text.strip()!r}")
    return found


def _cpus(text: str) -> float:
    found = cpus(text)
    if found is None:
        raise ValueError(f"not a number of CPUs (0.5, 1), got {text.strip()!r}")
    return found


def _choice(*choices: str) -> Callable[[str], str]:
    def chosen(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text.strip()!r}")
        return value

    chosen.choices = choices  # type: ignore[attr-defined]  # for the help's metavar
    return chosen


def _int(text: str) -> int:
    return int(text.strip())


def _str(text: str) -> str:
    return text.strip()


def _prefix(text: str) -> str:
    text = text.strip()
    if not text.startswith("/"):
        raise ValueError(f"must start with '/', got {text!r}")
    return text if text.endswith("/") else text + "/"


MAX_LEASE_TTL = 9_000_000_000  # seconds: the longest lease etcd grants (its MaxLeaseTTL)


def lease_seconds(ttl: float) -> int:
    """The etcd lease TTL of a duration: etcd leases are whole seconds, so a fraction rounds
    up (`1.5s` is a 2 s lease, `500ms` a 1 s lease): a lease never ends before the TTL given."""
    return max(1, math.ceil(ttl))


class OnReload(enum.Enum):
    """What SIGHUP does with an option's new value (docs/configuration.md, "Reloading")."""

    APPLIED = "applied"  # takes effect at once
    RESTART = "restart"  # read at start only: the new value waits for a restart
    UNUSED = "unused"  # accepted for compatibility, no effect either way


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    help: str
    deprecated: bool = False  # accepted and ignored, with a warning
    on_reload: OnReload = OnReload.RESTART

    @property
    def env(self) -> str:
        return "FLEET_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str:
        """What a value looks like, for `fleetd --help` and the man page."""
        choices = getattr(self.parse, "choices", None)
        return "|".join(choices) if choices else _METAVARS.get(self.parse, "VALUE")

    @property
    def default(self) -> str:
        """The default as it is written in fleet.conf ("" when empty)."""
        value = getattr(Config(), self.name)
        if self.parse is _duration:
            return f"{value:g}s"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, Mapping):
            return ",".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


_NOW, _UNUSED = OnReload.APPLIED, OnReload.UNUSED

OPTIONS: tuple[Option, ...] = (
    Option("verbosity", _int, "log detail: 0 info, 1 and above debug", on_reload=_NOW),
    Option("etcd_servers", _list, "etcd endpoints, comma-separated (http:// or https://)"),
    Option("etcd_cafile", _str, "CA certificate that signed etcd's server certificate"),
    Option("etcd_certfile", _str, "client certificate presented to etcd"),
    Option("etcd_keyfile", _str, "key of the client certificate"),
    Option("etcd_username", _str, "etcd user (etcd auth)"),
    Option("etcd_password", _str, "etcd password (etcd auth)"),
    Option("etcd_key_prefix", _prefix, "key prefix of fleetd's data in etcd"),
    Option("etcd_request_timeout", _duration, "timeout of one etcd request"),
    Option("public_ip", _str, "IP other machines and fleetctl ssh reach this machine at"),
    Option("metadata", parse_metadata, "machine metadata, k=v,k2=v2", on_reload=_NOW),
    Option(
        "agent_ttl",
        _duration,
        "this machine's lease TTL: a silent machine is gone after it (whole seconds, rounded up)",
    ),
    Option(
        "engine_ttl",
        _duration,
        "the engine leader's lease TTL: a dead leader is replaced after it (whole seconds, "
        "rounded up)",
    ),
    Option(
        "reserved_memory",
        _size,
        "memory held back for the host, not given to units (512M, 2G)",
        on_reload=_NOW,
    ),
    Option(
        "reserved_cpu",
        _cpus,
        "CPUs held back for the host, not given to units (0.5, 1)",
        on_reload=_NOW,
    ),
    Option("overcommit", _bool, "take units beyond this machine's memory and CPUs", on_reload=_NOW),
    Option(
        "scheduler",
        _choice("leastloaded", "binpack", "spread"),
        "how the engine ranks the machines that fit a unit with reservations",
        on_reload=_NOW,
    ),
    Option(
        "engine_reconcile_interval",
        _duration,
        "fleet's re-plan period; unused (fleetd re-plans on every watch event)",
        on_reload=_UNUSED,
    ),
    Option("units_directory", _str, "where the agent writes unit files"),
    Option("systemd_user", _bool, "talk to the user's systemd instead of the system one"),
    Option("disable_engine", _bool, "never take part in engine leadership"),
    Option("token_limit", _int, "API page size", on_reload=_NOW),
    Option("machine_id", _str, "machine ID (default: read from machine_id_file)"),
    Option("machine_id_file", _str, "file holding the machine ID"),
    Option("dbus_address", _str, "D-Bus address of the systemd manager (default: system bus)"),
    Option("api_socket", _str, "unix socket of the HTTP API"),
    Option("api_socket_group", _str, "group owning the API socket (mode 0660)"),
    Option("api_listen", _str, "also serve the API on this TCP host:port (needs api_tls_*)"),
    Option(
        "api_tls_cert",
        _str,
        "certificate of the TCP API and the peer listener",
        on_reload=_NOW,
    ),
    Option("api_tls_key", _str, "key of the api_tls_cert certificate", on_reload=_NOW),
    Option(
        "api_tls_ca",
        _str,
        "CA of the client certificates the TCP API and peers accept",
        on_reload=_NOW,
    ),
    Option(
        "peer_port",
        _int,
        "TCP port on public_ip where other fleetds fetch status/journal of local units, over "
        "mutual TLS with the api_tls_* files (0: off)",
    ),
    Option("runtime_dir", _str, "where fleetd keeps its lease ID across restarts"),
    Option("fence_on_lease_loss", _bool, "stop local units when the lease cannot be renewed"),
    Option(
        "leave_on_shutdown",
        _bool,
        "on SIGTERM stop local units and leave the cluster",
        on_reload=_NOW,
    ),
    Option(
        "enable_grpc",
        _bool,
        "fleet 1.0's experimental gRPC: not needed",
        deprecated=True,
        on_reload=_UNUSED,
    ),
    Option(
        "disable_watches",
        _bool,
        "fleet 1.0's polling mode: fleetd always watches",
        deprecated=True,
        on_reload=_UNUSED,
    ),
    Option("verify_units", _bool, "deprecated in fleet 1.0", deprecated=True, on_reload=_UNUSED),
    Option(
        "authorized_keys_file",
        _str,
        "deprecated in fleet 1.0",
        deprecated=True,
        on_reload=_UNUSED,
    ),
)
_BY_NAME = {o.name: o for o in OPTIONS}
_METAVARS: dict[Callable[[str], Any], str] = {
    _duration: "DURATION",
    _bool: "BOOL",
    _int: "N",
    _list: "URL,...",
    parse_metadata: "K=V,...",
    _size: "SIZE",
    _cpus: "CPUS",
    _prefix: "PREFIX",
    _str: "TEXT",
}


@dataclass(frozen=True, slots=True)
class Config:
    verbosity: int = 0
    etcd_servers: tuple[str, ...] = ("http://127.0.0.1:2379",)
    etcd_cafile: str = ""
    etcd_certfile: str = ""
    etcd_keyfile: str = ""
    etcd_username: str = ""
    etcd_password: str = field(default="", repr=False)
    etcd_key_prefix: str = "/fleet/"
    etcd_request_timeout: float = 1.0
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    agent_ttl: float = 30.0
    engine_ttl: float = 10.0
    reserved_memory: int = 0
    reserved_cpu: float = 0.0
    overcommit: bool = False
    scheduler: str = "leastloaded"
    engine_reconcile_interval: float = 300.0
    units_directory: str = "/run/fleet/units/"
    systemd_user: bool = False
    disable_engine: bool = False
    token_limit: int = 100
    machine_id: str = ""
    machine_id_file: str = "/etc/machine-id"
    dbus_address: str = ""
    api_socket: str = "/var/run/fleet.sock"
    api_socket_group: str = ""
    api_listen: str = ""
    api_tls_cert: str = ""
    api_tls_key: str = ""
    api_tls_ca: str = ""
    peer_port: int = 0
    runtime_dir: str = "/run/fleet"
    fence_on_lease_loss: bool = False
    leave_on_shutdown: bool = False
    enable_grpc: bool = False
    disable_watches: bool = False
    verify_units: bool = False
    authorized_keys_file: str = ""
    # options given that fleetd accepts for compatibility but ignores
    ignored: tuple[str, ...] = ()
    # FLEET_* environment variables that name no option (fleet ignored them; fleetd warns)
    unknown_variables: tuple[str, ...] = ()

    @property
    def agent_lease(self) -> int:
        """The TTL of this machine's etcd lease, in whole seconds (rounded up)."""
        return lease_seconds(self.agent_ttl)

    @property
    def engine_lease(self) -> int:
        """The TTL of the engine leader's etcd lease, in whole seconds (rounded up)."""
        return lease_seconds(self.engine_ttl)

    def check(self) -> None:
        """Cross-option rules."""
        if self.api_listen and not (self.api_tls_cert and self.api_tls_key and self.api_tls_ca):
            raise ConfigError(
                "api_listen needs api_tls_cert, api_tls_key and api_tls_ca: the TCP API only "
                "serves clients with a certificate signed by that CA"
            )
        if bool(self.etcd_certfile) != bool(self.etcd_keyfile):
            raise ConfigError("etcd_certfile and etcd_keyfile must be given together")
        if bool(self.etcd_username) != bool(self.etcd_password):
            raise ConfigError("etcd_username and etcd_password must be given together")
        if not self.etcd_servers:
            raise ConfigError("etcd_servers: at least one endpoint is needed")
        for endpoint in self.etcd_servers:
            if not re.fullmatch(r"(https?://)?[^/\s]+:\d+/?", endpoint):
                raise ConfigError(
                    f"etcd_servers: {endpoint!r} is not host:port or http(s)://host:port"
                )
        if not 0 <= self.peer_port <= 65535:
            raise ConfigError("peer_port must be between 0 (off) and 65535")
        if self.peer_port and not (self.api_tls_cert and self.api_tls_key and self.api_tls_ca):
            raise ConfigError(
                "peer_port needs api_tls_cert, api_tls_key and api_tls_ca: the peer listener "
                "serves status and journal only to fleetds with a certificate signed by that CA"
            )
        if self.token_limit < 1 or self.token_limit > 65535:
            raise ConfigError("token_limit must be between 1 and 65535")
        for name in ("agent_ttl", "engine_ttl"):
            if getattr(self, name) > MAX_LEASE_TTL:
                raise ConfigError(f"{name} must be at most {MAX_LEASE_TTL}s (etcd's longest lease)")

    def with_values(self, **values: Any) -> Config:
        return dataclasses.replace(self, **values)


def parse_config_file(text: str, source: str = DEFAULT_CONFIG_FILE) -> dict[str, str]:
    """fleet.conf: `name=value` lines at global level; `#`/`;` comments, optional quotes."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            raise ConfigError(f"{source}:{number}: sections are not used in fleet.conf: {line!r}")
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"{source}:{number}: expected name=value, found {line!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def build_config(
    file_values: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
    *,
    file_source: str = DEFAULT_CONFIG_FILE,
) -> Config:
    """Merge the three sources (flags > env > file) into a checked Config."""
    raw: dict[str, tuple[str, str]] = {}
    for name, value in (file_values or {}).items():
        raw[name] = (value, file_source)
    unknown: list[str] = []
    for key, value in (env or {}).items():
        if key.startswith("FLEET_"):
            name = key[len("FLEET_") :].lower()
            if name in _BY_NAME:
                raw[name] = (value, f"environment variable {key}")
            else:  # fleet read only the variables of its options: the others are not ours
                unknown.append(key)
    for name, value in (flags or {}).items():
        raw[name.replace("-", "_")] = (value, f"flag --{name.replace('_', '-')}")

    values: dict[str, Any] = {}
    ignored: list[str] = []
    for name, (value, source) in sorted(raw.items()):
        option = _BY_NAME.get(name)
        if option is None:
            raise ConfigError(f"unknown option {name!r} ({source})")
        try:
            values[name] = option.parse(value)
        except ValueError as err:
            raise ConfigError(f"invalid value for {name} ({source}): {err}") from None
        if option.deprecated:
            ignored.append(name)
    config = Config(**values, ignored=tuple(ignored), unknown_variables=tuple(sorted(unknown)))
    config.check()
    return config


def load_config(
    path: str | None,
    env: Mapping[str, str],
    flags: Mapping[str, str],
) -> Config:
    """Read the config file (`path`, or the default if it exists) and build the Config."""
    file_values: dict[str, str] = {}
    source = path or DEFAULT_CONFIG_FILE
    try:
        text = Path(source).read_text()
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"configuration file {path} does not exist") from None
        text = ""
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {source}: {err.strerror}") from None
    file_values = parse_config_file(text, source)
    return build_config(file_values, env, flags, file_source=source)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What SIGHUP makes of a configuration read again: `config` is the one fleetd runs with
    from now on (the running one, with the options that apply at once taken from the new one);
    `applied` the changed options that take effect now, `restart` the changed ones that wait
    for a restart (they keep their running value until then)."""

    config: Config
    applied: tuple[str, ...]
    restart: tuple[str, ...]


_TLS = ("api_tls_cert", "api_tls_key", "api_tls_ca")


def reload_config(running: Config, new: Config) -> Reloaded:
    """Split the changes between `running` and `new` by each option's `on_reload`.

    The TLS files go together and only if the result still holds with the listeners that run:
    a listener cannot lose its certificate until it is closed by a restart."""
    changed = [o for o in OPTIONS if getattr(new, o.name) != getattr(running, o.name)]
    applied = [o.name for o in changed if o.on_reload is OnReload.APPLIED]
    restart = [o.name for o in changed if o.on_reload is OnReload.RESTART]
    config = running.with_values(**{name: getattr(new, name) for name in applied})
    try:
        config.check()
    except ConfigError:
        tls = [name for name in applied if name in _TLS]
        applied = [name for name in applied if name not in _TLS]
        restart = sorted(restart + tls, key=_ORDER.__getitem__)
        config = running.with_values(**{name: getattr(new, name) for name in applied})
    return Reloaded(config, tuple(applied), tuple(restart))


_ORDER = {o.name: i for i, o in enumerate(OPTIONS)}
