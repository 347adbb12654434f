"""fleetd configuration: fleet's option names, precedence flags > env > file, precise errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.config import (
    OPTIONS,
    Config,
    ConfigError,
    build_config,
    load_config,
    parse_config_file,
    parse_duration,
    parse_metadata,
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
        ({}, {"FLEET_BOGUS": "1"}, {}, "unknown option 'bogus' (environment variable FLEET_BOGUS)"),
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
