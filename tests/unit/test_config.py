"""fleetd configuration: fleet's option names, precedence flags > env > file, precise errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.config import (
    MAX_LEASE_TTL,
    OPTIONS,
    Config,
    ConfigError,
    OnReload,
    build_config,
    lease_seconds,
    load_config,
    parse_config_file,
    parse_duration,
    parse_metadata,
    reload_config,
)

FLEET_CONF = """
# /etc/fleet/fleet.conf as fleet's users write it
etcd_servers=["http://10.0.0.1:2379","http://10.0.0.2:2379"]
etcd_key_prefix=/myfleet
public_ip="127.0.0.11"
metadata="region=us-west,role=web"
agent_ttl=10s
disable_engine=true
verbosity=1
"""


def test_fleet_conf_as_fleet_users_write_it() -> None:
    config = build_config(parse_config_file(FLEET_CONF))
    assert config.etcd_servers == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert config.etcd_key_prefix == "/myfleet/"
    assert config.public_ip == "127.0.0.11"
    assert dict(config.metadata) == {"region": "us-west", "role": "web"}
    assert config.agent_ttl == 10.0
    assert config.disable_engine is True
    assert config.verbosity == 1


def test_defaults() -> None:
    config = build_config()
    assert config == Config()
    assert config.agent_ttl == 30.0
    assert config.units_directory == "/run/fleet/units/"
    assert config.api_socket == "/var/run/fleet.sock"


def test_precedence_flags_over_env_over_file() -> None:
    file_values = {"agent_ttl": "10s", "public_ip": "1.1.1.1", "verbosity": "1"}
    env = {"FLEET_AGENT_TTL": "20s", "FLEET_PUBLIC_IP": "2.2.2.2", "HOME": "/root"}
    flags = {"agent-ttl": "5s"}
    config = build_config(file_values, env, flags)
    assert (config.agent_ttl, config.public_ip, config.verbosity) == (5.0, "2.2.2.2", 1)


@pytest.mark.parametrize(
    ("file_values", "env", "flags", "message"),
    [
        ({"agent_tll": "5s"}, {}, {}, "unknown option 'agent_tll' (/etc/fleet/fleet.conf)"),
        ({}, {}, {"bogus": "1"}, "unknown option 'bogus' (flag --bogus)"),
        (
            {},
            {"FLEET_AGENT_TTL": "1s5"},
            {},
            "invalid value for agent_ttl (environment variable FLEET_AGENT_TTL)",
        ),
        (
            {"engine_ttl": "0"},
            {},
            {},
            "invalid value for engine_ttl (/etc/fleet/fleet.conf): must be greater than zero",
        ),
        (
            {},
            {},
            {"engine-ttl": "10d"},
            "invalid value for engine_ttl (flag --engine-ttl): invalid duration '10d'",
        ),
        (
            {"agent_ttl": "9000000001s"},
            {},
            {},
            f"agent_ttl must be at most {MAX_LEASE_TTL}s (etcd's longest lease)",
        ),
        (
            {},
            {},
            {"agent-ttl": "soon"},
            "invalid value for agent_ttl (flag --agent-ttl): invalid duration 'soon'",
        ),
        (
            {"agent_ttl": "0s"},
            {},
            {},
            "invalid value for agent_ttl (/etc/fleet/fleet.conf): must be greater than zero",
        ),
        ({"verbosity": "loud"}, {}, {}, "invalid value for verbosity"),
        ({"disable_engine": "maybe"}, {}, {}, "expected true or false, got 'maybe'"),
        ({"metadata": "role"}, {}, {}, "metadata entry 'role' is not key=value"),
        ({"metadata": "ro le=web"}, {}, {}, "metadata key 'ro le' may hold only"),
        ({"metadata": "fleet.cpus=64"}, {}, {}, "metadata key 'fleet.cpus' is reserved"),
        (
            {"reserved_memory": "lots"},
            {},
            {},
            "invalid value for reserved_memory (/etc/fleet/fleet.conf): not a size",
        ),
        ({}, {"FLEET_RESERVED_CPU": "-1"}, {}, "not a number of CPUs (0.5, 1), got '-1'"),
        (
            {},
            {},
            {"scheduler": "random"},
            "expected one of leastloaded, binpack, spread, got 'random'",
        ),
        ({"etcd_key_prefix": "fleet"}, {}, {}, "must start with '/'"),
        ({"etcd_servers": "http://a:2379/x/y"}, {}, {}, "is not host:port"),
        ({"etcd_servers": ""}, {}, {}, "at least one endpoint"),
        (
            {"etcd_certfile": "/c.pem"},
            {},
            {},
            "etcd_certfile and etcd_keyfile must be given together",
        ),
        (
            {"etcd_username": "root"},
            {},
            {},
            "etcd_username and etcd_password must be given together",
        ),
        ({"api_listen": "127.0.0.1:49153"}, {}, {}, "api_listen needs api_tls_cert"),
        ({"peer_port": "7001"}, {}, {}, "peer_port needs api_tls_cert, api_tls_key and api_tls_ca"),
        (
            {"peer_port": "7001", "api_tls_cert": "/c.pem", "api_tls_key": "/k.pem"},
            {},
            {},
            "peer_port needs api_tls_cert",
        ),
        ({"token_limit": "0"}, {}, {}, "token_limit must be between 1 and 65535"),
    ],
)
def test_errors_name_the_option_and_source(file_values, env, flags, message) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(file_values, env, flags)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[global]\nagent_ttl=5s\n", "/etc/fleet/fleet.conf:1: sections are not used"),
        ("agent_ttl 5s\n", "/etc/fleet/fleet.conf:1: expected name=value"),
        ("\n=5\n", "/etc/fleet/fleet.conf:2: expected name=value"),
    ],
)
def test_file_syntax_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config_file(text)


def test_deprecated_options_are_accepted_and_reported() -> None:
    config = build_config({"enable_grpc": "true", "verify_units": "false"})
    assert config.ignored == ("enable_grpc", "verify_units")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5 s", "-5s", "5d", "5s5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_metadata_last_duplicate_wins_and_whitespace() -> None:
    assert parse_metadata(" role = web , region=a,role=db ,") == {"role": "db", "region": "a"}


def test_load_config_reads_file(tmp_path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text("agent_ttl=7s\n")
    assert load_config(str(path), {}, {}).agent_ttl == 7.0
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.conf"), {}, {})


def test_every_option_is_a_config_field() -> None:
    fields = set(Config.__dataclass_fields__)
    assert {o.name for o in OPTIONS} <= fields


@given(
    st.dictionaries(
        st.sampled_from([o.name for o in OPTIONS] + ["nope"]), st.text(max_size=20), max_size=5
    )
)
def test_arbitrary_values_raise_only_config_error(values) -> None:
    try:
        build_config(values)
    except ConfigError:
        pass


def test_every_option_is_in_the_configuration_reference() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for option in OPTIONS:
        assert f"| `{option.name}` |" in doc, option.name
        assert f"`FLEET_{option.name.upper()}`" in doc, option.name


def test_unknown_fleet_variables_are_recorded_not_fatal() -> None:
    # fleet read only the FLEET_* variables of its options and ignored the others; fleetd does
    # the same and names them, so the daemon logs one warning per variable (config.unknown_variable)
    env = {
        "FLEET_NO_SUCH": "1",
        "FLEET_AGENT_TTL": "5s",
        "FLEET_ETCD_ENDPOINT": "x",
        "PATH": "/bin",
    }
    config = build_config({}, env, {})
    assert config.unknown_variables == ("FLEET_ETCD_ENDPOINT", "FLEET_NO_SUCH")
    assert config.agent_ttl == 5.0


def test_unknown_options_in_the_file_stay_an_error() -> None:
    # fleet silently skipped them (a typo went unnoticed); fleetd names the option and the file
    with pytest.raises(ConfigError, match=r"unknown option 'agent_tll' \(/etc/fleet/fleet.conf\)"):
        build_config({"agent_tll": "5s"}, {"FLEET_NO_SUCH": "1"}, {})


def test_engine_ttl_is_its_own_option_with_fleets_10s() -> None:
    assert Config().engine_ttl == 10.0 and Config().engine_lease == 10
    config = build_config({"agent_ttl": "60s"})  # no longer derived from agent_ttl
    assert (config.agent_lease, config.engine_lease) == (60, 10)
    assert build_config({}, {"FLEET_ENGINE_TTL": "4s"}).engine_lease == 4


@pytest.mark.parametrize(
    ("text", "lease"),
    [
        ("30s", 30),  # whole seconds stay
        ("1.5s", 2),  # a fraction rounds up: the lease never ends before the TTL given
        ("500ms", 1),  # sub-second values are accepted: the shortest lease, 1 s
        ("2001ms", 3),
        ("1m", 60),
        ("0.001", 1),
    ],
)
def test_ttls_accept_fractions_and_round_up_to_whole_seconds(text: str, lease: int) -> None:
    config = build_config({"agent_ttl": text, "engine_ttl": text})
    assert config.agent_ttl == parse_duration(text)
    assert config.agent_lease == config.engine_lease == lease == lease_seconds(parse_duration(text))


# --- SIGHUP: which changes apply at once (fleetd.config.reload_config) --------------------------

# a machine serving the API on TCP: its TLS files are in use
BASE = {
    "metadata": "role=web",
    "api_listen": "127.0.0.1:49153",
    "api_tls_cert": "/etc/fleet/api.pem",
    "api_tls_key": "/etc/fleet/api-key.pem",
    "api_tls_ca": "/etc/fleet/ca.pem",
}
RUNNING = build_config(BASE)


@pytest.mark.parametrize(
    ("changes", "applied", "restart"),
    [
        pytest.param({}, (), (), id="nothing-changed"),
        # the machine is registered again with the new metadata and reservations
        pytest.param(
            {"metadata": "role=db,disk=ssd", "reserved_memory": "512M", "overcommit": "true"},
            ("metadata", "reserved_memory", "overcommit"),
            (),
            id="machine-document",
        ),
        pytest.param(
            {
                "verbosity": "1",
                "scheduler": "binpack",
                "token_limit": "50",
                "leave_on_shutdown": "true",
            },
            ("verbosity", "scheduler", "token_limit", "leave_on_shutdown"),
            (),
            id="logging-engine-api-shutdown",
        ),
        # etcd's client, the leases, the sockets and systemd's bus are opened once, at start
        pytest.param(
            {
                "etcd_servers": "http://10.0.0.9:2379",
                "agent_ttl": "10s",
                "engine_ttl": "5s",
                "api_socket": "/run/f.sock",
            },
            (),
            ("etcd_servers", "agent_ttl", "engine_ttl", "api_socket"),
            id="restart-only",
        ),
        pytest.param(
            {"metadata": "role=db", "public_ip": "10.0.0.2"},
            ("metadata",),
            ("public_ip",),
            id="mixed",
        ),
        # renewed certificates are read at once by the listeners that run
        pytest.param(
            {"api_tls_cert": "/etc/fleet/api2.pem", "api_tls_key": "/etc/fleet/api2-key.pem"},
            ("api_tls_cert", "api_tls_key"),
            (),
            id="tls-files",
        ),
        # a listener that runs cannot lose its certificate: only a restart closes it
        pytest.param(
            {"api_listen": "", "api_tls_cert": "", "api_tls_key": "", "api_tls_ca": ""},
            (),
            ("api_listen", "api_tls_cert", "api_tls_key", "api_tls_ca"),
            id="tls-off-waits-for-the-listener",
        ),
        pytest.param(
            {"engine_reconcile_interval": "10s", "enable_grpc": "true"}, (), (), id="unused"
        ),
    ],
)
def test_reload_splits_changes_into_applied_and_restart(changes, applied, restart) -> None:
    new = build_config({**BASE, **changes})
    reloaded = reload_config(RUNNING, new)
    assert (reloaded.applied, reloaded.restart) == (applied, restart)
    for name in applied:  # taken from the new configuration
        assert getattr(reloaded.config, name) == getattr(new, name)
    for name in restart:  # kept as running until the restart
        assert getattr(reloaded.config, name) == getattr(RUNNING, name)
    reloaded.config.check()


def test_reloading_twice_reports_the_restart_options_again() -> None:
    new = build_config({"agent_ttl": "10s", "metadata": "role=db"})
    first = reload_config(Config(), new)
    second = reload_config(first.config, new)
    assert (first.applied, first.restart) == (("metadata",), ("agent_ttl",))
    assert (second.applied, second.restart) == ((), ("agent_ttl",))


def test_every_option_says_what_sighup_does_with_it() -> None:
    kinds = {o.name: o.on_reload for o in OPTIONS}
    assert all(isinstance(kind, OnReload) for kind in kinds.values())
    assert all(kinds[o.name] is OnReload.UNUSED for o in OPTIONS if o.deprecated)
