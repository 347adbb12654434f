"""Fuzzing the pure parsers with hypothesis: unit files, unit names, configuration files.

Each property runs thousands of cases built from the characters that matter to the parser
(section brackets, `=`, line continuations, comments, quotes, `@`, `.`, `/`, NUL, non-ASCII),
so most cases reach deep into the parser rather than failing at the first character. The only
exception allowed out is the parser's own error, with a message that names the problem.
tests/unit has the plain-text versions of these properties; these add structure and volume.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetd.config import OPTIONS, ConfigError, build_config, parse_config_file
from fleetd.systemd.unitdir import BadUnitName, UnitDir
from fleetd.unit import (
    UnitFile,
    UnitNameError,
    UnitParseError,
    UnitValidationError,
    parse_name,
    parse_unit,
    validate_name,
)
from tests.faults.harness import report

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
COUNTS: dict[str, int] = {}


def _count(scenario: str) -> None:
    COUNTS[scenario] = COUNTS.get(scenario, 0) + 1


# --- unit files ------------------------------------------------------------------------------
_pieces = st.sampled_from(
    [
        "[",
        "]",
        "[Unit]",
        "[Service]",
        "[X-Fleet]",
        "[Install]",
        "[ ]",
        "=",
        "==",
        "\\",
        "\\\n",
        "\n",
        "\r\n",
        "\r",
        "#",
        ";",
        " ",
        "\t",
        '"',
        "'",
        "%i",
        "%n",
        "@",
        "Description",
        "ExecStart",
        "MachineID",
        "Conflicts",
        "Global",
        "MachineMetadata",
        "X-ConditionMachineOf",
        "true",
        "a=b",
        "\x00",
        "\x1b",
        "\u00e9",
        "\u2028",
        "\ufeff",
        "\udcff",
        "x",
        "1",
    ]
)
unit_texts = st.one_of(
    st.lists(_pieces, max_size=40).map("".join),
    st.text(max_size=200),
)


@settings(FAST, max_examples=2000)
@given(unit_texts)
def test_unit_file_text_raises_only_unit_parse_error(text: str) -> None:
    try:
        unit = parse_unit(text)
    except UnitParseError as err:
        _count("unit file rejected")
        assert err.line >= 1 and str(err).startswith(f"line {err.line}: ") and len(str(err)) > 10
        return
    _count("unit file accepted")
    assert parse_unit(unit.serialize()) == unit
    try:  # the [X-Fleet] rules the API checks too: their own error only
        unit.requirements("fuzz.service").validate()
    except UnitValidationError as err:
        assert str(err)


_option_parts = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "Unit",
            "Service",
            "X-Fleet",
            "ExecStart",
            "Global",
            "a=b",
            "[x]",
            "\n",
            "\\",
            "#c",
            "x\x00y",
            "\u00e9",
            "MachineID",
            "true",
        ]
    ),
    st.text(max_size=8),
)


@settings(FAST, max_examples=1500)
@given(st.lists(st.tuples(_option_parts, _option_parts, _option_parts), max_size=6))
def test_unit_options_raise_only_unit_parse_error(triples: list[tuple[str, str, str]]) -> None:
    try:
        unit = UnitFile.from_options(triples)
    except UnitParseError as err:
        _count("options rejected")
        assert str(err)
        return
    _count("options accepted")
    assert parse_unit(unit.serialize()) == unit  # what the agent writes reads back the same


# --- unit names ------------------------------------------------------------------------------
_name_pieces = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        "-",
        "_",
        ":",
        "\\",
        "@",
        ".",
        "..",
        "/",
        "../",
        "%2F",
        "%00",
        "\x00",
        " ",
        "\n",
        "\u00e9",
        "\u202e",
        ".service",
        ".socket",
        ".timer",
        ".target",
        "@.service",
        "etc",
        "passwd",
        "~",
        "*",
        "?",
        "$",
        "'",
    ]
)
unit_names = st.one_of(
    st.lists(_name_pieces, max_size=12).map("".join),
    st.tuples(  # shaped like a unit name, with hostile parts: most reach the last checks
        st.lists(_name_pieces, min_size=1, max_size=4).map("".join),
        st.sampled_from(["", "@", "@80", "@a/b", "@..", "@\x00"]),
        st.sampled_from([".service", ".socket", ".timer", ".bogus", "", ".service/"]),
    ).map("".join),
    st.text(max_size=40),
    st.text(min_size=250, max_size=260, alphabet="ab.@/"),
)


@settings(FAST, max_examples=3000)
@given(unit_names)
def test_unit_names_never_leave_the_units_dir(name: str) -> None:
    units = UnitDir(Path("/run/fleet/units"))
    try:
        validate_name(name)
    except UnitNameError as err:
        _count("name rejected")
        assert str(err)
        try:
            units.path_of(name)
        except BadUnitName:
            pass
        else:
            raise AssertionError(f"path_of accepted {name!r}, which validate_name refuses")
        return
    _count("name accepted")
    parsed = parse_name(name)  # a valid name parses, without any other exception
    assert parsed.is_template or parsed.is_instance or "@" not in name
    path = units.path_of(name)
    assert os.path.realpath(path).startswith("/run/fleet/units/") and path.name == name
    assert "/" not in name and "\x00" not in name and name not in (".", "..")
    assert not name.startswith(".")  # temporary files of UnitDir start with "."


@settings(FAST, max_examples=1000)
@given(unit_names)
def test_parse_name_raises_only_unit_name_error(name: str) -> None:
    try:
        parse_name(name)
    except UnitNameError as err:
        assert str(err)


# --- configuration files ---------------------------------------------------------------------
_NAMES = [o.name for o in OPTIONS]
_config_pieces = st.one_of(
    st.sampled_from(
        [
            *_NAMES,
            "nope",
            "=",
            " = ",
            "\n",
            "#",
            ";",
            "[section]",
            '"',
            "'",
            "\\",
            "s",
            "ms",
            "10s",
            "-1",
            "0",
            "1.5",
            "true",
            "yes",
            "x=y,z",
            ",",
            "\x00",
            "\u00e9",
            "http://127.0.0.1:2379",
            "/fleet/",
            "\r",
        ]
    ),
    st.text(max_size=6),
)
config_texts = st.one_of(st.lists(_config_pieces, max_size=30).map("".join), st.text(max_size=120))
config_lines = st.lists(
    st.tuples(st.sampled_from(_NAMES), st.one_of(_config_pieces, st.text(max_size=12))),
    max_size=6,
).map(lambda pairs: "".join(f"{n}={v}\n" for n, v in pairs))


@settings(FAST, max_examples=2000)
@given(st.one_of(config_texts, config_lines))
def test_config_file_raises_only_config_error(text: str) -> None:
    try:
        config = build_config(parse_config_file(text, "fuzz.conf"))
    except ConfigError as err:
        _count("config rejected")
        message = str(err)
        assert message and "Traceback" not in message
        return
    _count("config accepted")
    config.check()


def test_zz_report_fuzz_counts() -> None:
    """Print how many cases each property ran (the figure of this file)."""
    started = time.monotonic()
    report(
        "fuzz parsers (cases: accepted/rejected)",
        ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())),
    )
    assert time.monotonic() >= started
