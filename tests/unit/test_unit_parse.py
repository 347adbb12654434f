"""fleetd.unit parsing, serialization and hashing: fleet's rules, table by table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.unit import MAX_LINE_BYTES, UnitFile, UnitOption, UnitParseError, parse_unit
from tests.seed import seed_text

HELLO = seed_text("hello.service")
APACHE = seed_text("apache@.service")

# fleet's own examples/hello.service, whose hash fleet's documentation shows as e55c0ae.
FLEET_EXAMPLE_HELLO = """[Unit]
Description=Hello World

[Service]
ExecStart=/bin/bash -c "while true; do echo \\"Hello, world\\"; sleep 1; done"
"""


def opts(unit: UnitFile) -> list[tuple[str, str, str]]:
    return [(o.section, o.name, o.value) for o in unit.options]


@pytest.mark.parametrize(
    ("text", "expected_hash"),
    [
        # fleet's documentation: fleetctl list-unit-files shows e55c0ae for this file
        pytest.param(
            FLEET_EXAMPLE_HELLO, "e55c0aeb44ba0b68004ceb8a200e685194448b45", id="fleet-example"
        ),
        # what fleet 1.0 printed on these machines for the docker-free hello (fleet-outputs/)
        pytest.param(
            "[Unit]\nDescription=Hello World\n\n[Service]\n"
            "ExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'\n",
            "44d32a97a257f98cb98ac6dce8b13c6fa00b233d",
            id="fleet-outputs-hello",
        ),
    ],
)
def test_hash_is_fleets(text: str, expected_hash: str) -> None:
    unit = parse_unit(text)
    assert unit.hash == expected_hash
    assert unit.short_hash == expected_hash[:7]


def test_seed_hello_parses_in_order() -> None:
    unit = parse_unit(HELLO)
    assert opts(unit)[:2] == [
        ("Unit", "Description", "My Service"),
        ("Unit", "After", "docker.service"),
    ]
    # repeated keys are kept, in order
    assert unit.values("Service", "ExecStartPre") == [
        "-/usr/bin/docker kill hello",
        "-/usr/bin/docker rm hello",
        "/usr/bin/docker pull busybox",
    ]
    assert unit.description == "My Service"
    # the seed's file is already in fleet's serialized form: cat prints it back unchanged
    assert unit.serialize() == HELLO


def test_seed_apache_template_parses() -> None:
    unit = parse_unit(APACHE)
    assert unit.values("Unit", "After") == ["etcd.service", "docker.service"]
    assert unit.values("X-Fleet", "X-Conflicts") == ["apache@*.service"]
    assert unit.serialize() == APACHE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # comments with # and ; are skipped, anywhere
        ("# top\n[Unit]\n; inside\nA=1\n", [("Unit", "A", "1")]),
        # blank lines and leading whitespace are skipped
        ("\n\n  [Unit]\n\n   A = 1  \n", [("Unit", "A", "1")]),
        # whitespace around names and values is trimmed
        ("[Unit]\n  Name   =   value with  spaces   \n", [("Unit", "Name", "value with  spaces")]),
        # an empty value is a value
        ("[Unit]\nA=\n", [("Unit", "A", "")]),
        # "=" inside a value stays
        ("[X-Fleet]\nMachineMetadata=a=b\n", [("X-Fleet", "MachineMetadata", "a=b")]),
        # trailing backslash continues; fleet keeps the backslash and the newline
        (
            "[Service]\nExecStart=/bin/echo \\\n  hi\n",
            [("Service", "ExecStart", "/bin/echo \\\n  hi")],
        ),
        # continuation over three lines
        ("[S]\nA=1\\\n2\\\n3\nB=4\n", [("S", "A", "1\\\n2\\\n3"), ("S", "B", "4")]),
        # a blank line ends a continuation; the kept newline stays at the end
        ("[S]\nA=1\\\n\nB=2\n", [("S", "A", "1\\\n"), ("S", "B", "2")]),
        # a backslash on the very last line of the file
        ("[S]\nA=1\\", [("S", "A", "1\\")]),
        # a comment ending in a backslash swallows the next line, as fleet's lexer does
        ("[S]\n# note \\\nA=1\nB=2\n", [("S", "B", "2")]),
        # CRLF line ends
        ("[S]\r\nA=1\r\n", [("S", "A", "1")]),
        # sections are grouped in first-appearance order (fleet's serialized order)
        ("[A]\nx=1\n[B]\ny=2\n[A]\nz=3\n", [("A", "x", "1"), ("A", "z", "3"), ("B", "y", "2")]),
        # a section with no options leaves nothing
        ("[Empty]\n[S]\nA=1\n", [("S", "A", "1")]),
        # no final newline
        ("[S]\nA=1", [("S", "A", "1")]),
        # empty text is an empty unit
        ("", []),
    ],
    ids=lambda v: None,
)
def test_parse_table(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert opts(parse_unit(text)) == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("A=1\n[S]\n", 1, "option outside of any [Section]"),
        ("[S]\nno equals sign\n", 2, "expected Name=Value"),
        ("[S]\n=value\n", 2, "option name cannot be empty"),
        ("[S\nA=1\n", 1, "unable to find end of section"),
        ("[S] junk\n", 1, "found garbage after section name S"),
        ("[]\nA=1\n", 1, "section name cannot be empty"),
        ("[S]\nA=" + "x" * MAX_LINE_BYTES + "\n", 2, "line too long (max 2048 bytes)"),
        ("[S]\nA=1\x00\n", 2, "NUL character"),
    ],
    ids=[
        "outside-section",
        "no-equals",
        "empty-name",
        "unclosed-section",
        "garbage-after-section",
        "empty-section",
        "line-too-long",
        "nul",
    ],
)
def test_parse_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(UnitParseError) as err:
        parse_unit(text)
    assert err.value.line == line
    assert message in str(err.value)
    assert str(err.value).startswith(f"line {line}: ")


def test_line_limit_counts_bytes_not_characters() -> None:
    # 1,024 two-byte characters make a 2,048-byte line
    with pytest.raises(UnitParseError, match="line too long"):
        parse_unit("[S]\n" + "é" * 1024 + "=1\n")
    parse_unit("[S]\nA=" + "x" * (MAX_LINE_BYTES - 3) + "\n")  # 2,047 bytes: fine


def test_serialize_format() -> None:
    unit = UnitFile.from_options(
        [
            ("Unit", "Description", "d"),
            ("Service", "ExecStart", "/bin/true"),
            ("X-Fleet", "Global", "true"),
        ]
    )
    assert unit.serialize() == (
        "[Unit]\nDescription=d\n\n[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n"
    )
    assert UnitFile(()).serialize() == ""


@pytest.mark.parametrize(
    "bad",
    [
        ("S", "A=B", "v"),  # "=" in a name would read back differently
        ("S", "A\nB", "v"),  # newline in a name
        ("S]", "A", "v"),  # "]" in a section
        ("S", "A", "1\nB=2"),  # a newline not preceded by a backslash would make a new option
        ("S", " A", "v"),  # untrimmed name
        ("S", "A", " v"),  # untrimmed value
        ("S", "#A", "v"),  # would read back as a comment
        ("S", "A", "x" * MAX_LINE_BYTES),  # over the line limit
    ],
)
def test_from_options_refuses_what_would_not_read_back(bad: tuple[str, str, str]) -> None:
    with pytest.raises(UnitParseError):
        UnitFile.from_options([bad])


def test_from_options_canonical_order() -> None:
    unit = UnitFile.from_options(
        [UnitOption("A", "x", "1"), UnitOption("B", "y", "2"), UnitOption("A", "z", "3")]
    )
    assert [o.name for o in unit.options] == ["x", "z", "y"]


# ---------------------------------------------------------------------------------------------
# properties

_name_chars = st.characters(
    blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="=[]#;\\\x85\xa0"
)
_names = st.text(_name_chars, min_size=1, max_size=20)
_value_segments = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), max_size=30
).map(str.strip)


@st.composite
def unit_texts(draw: st.DrawFn) -> str:
    """Unit-file text as people write it: sections, options, comments, continuations."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        lines.append(f"[{draw(_names)}]")
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(["opt", "opt", "comment", "blank", "cont"]))
            if kind == "comment":
                lines.append(draw(st.sampled_from(["#", ";"])) + draw(_value_segments))
            elif kind == "blank":
                lines.append("")
            else:
                value = draw(_value_segments)
                if kind == "cont":
                    value = value + "\\\n" + (draw(_value_segments) or "x")
                lines.append(f"{draw(_names)}={value}")
    return "\n".join(lines) + "\n"


@settings(max_examples=500)
@given(unit_texts())
def test_parse_serialize_roundtrip(text: str) -> None:
    unit = parse_unit(text)
    assert parse_unit(unit.serialize()) == unit
    assert UnitFile.from_options(unit.options) == unit
    assert parse_unit(unit.serialize()).hash == unit.hash


@settings(max_examples=1000)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_our_error(text: str) -> None:
    try:
        unit = parse_unit(text)
    except UnitParseError as err:
        assert err.line >= 1
        assert str(err).startswith(f"line {err.line}: ")
    else:
        assert parse_unit(unit.serialize()) == unit


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8), st.text(max_size=12)), max_size=6)
)
def test_arbitrary_options_are_accepted_only_if_they_read_back(
    triples: list[tuple[str, str, str]],
) -> None:
    try:
        unit = UnitFile.from_options(triples)
    except UnitParseError:
        return
    assert parse_unit(unit.serialize()) == unit
