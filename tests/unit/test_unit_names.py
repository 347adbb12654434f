"""Unit names: fleet's validation rules and messages, templates, and fleetctl's name mangling."""

from __future__ import annotations

import os.path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.unit_names import UnitNameError, mangle_name, parse_name, validate_name


@pytest.mark.parametrize(
    "name",
    [
        "hello.service",  # the walkthrough's unit
        "apache@.service",  # a template
        "apache@80.service",  # an instance
        "apache@8888.service",
        "foo.socket",
        "foo.device",
        "foo.mount",
        "foo.automount",
        "foo.timer",
        "foo.path",  # seed's
        "foo.target",
        "foo.slice",
        "foo.scope",
        "foo.swap",
        "foo.busname",
        "foo.snapshot",  # fleet's too
        "a:b_c.d-e.service",  # every punctuation the seed allows
        "foo\\x2dbar.service",  # systemd escapes (fleet allows "\")
        "x@a@b.service",  # "@" may repeat in an instance
        "a" * 248 + ".service",  # exactly 256 characters
    ],
)
def test_valid_names(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "unit name cannot be empty"),
        ("a" * 249 + ".service", "unit name exceeds maximum length (256)"),
        ("hello", 'unit name must contain "."'),
        ("hello.", 'unit name cannot end in "."'),
        ("hello.txt", 'invalid unit type: "txt"'),
        ("foo@.mount", 'invalid unit type for template: "mount"'),
        ("foo@1.device", 'invalid unit type for template: "device"'),
        ("@foo.service", 'unit name cannot start in "@"'),
        ("../../etc/passwd.service", "invalid character '/' in unit name"),
        ("a/b.service", "invalid character '/' in unit name"),
        ("a b.service", "invalid character ' ' in unit name"),
        ("a\x00b.service", "invalid character '\\x00' in unit name"),
        ("a\nb.service", "invalid character '\\x0a' in unit name"),
        ("..service", 'unit name cannot start in "."'),
        (".hidden.service", 'unit name cannot start in "."'),
        ("日本.service", "invalid character '日' in unit name"),
    ],
)
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(UnitNameError) as err:
        validate_name(name)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("name", "prefix", "instance", "template", "is_template", "is_instance"),
    [
        ("hello.service", "hello", "", "", False, False),
        ("apache@.service", "apache", "", "apache@.service", True, False),
        ("apache@80.service", "apache", "80", "apache@.service", False, True),
        ("a@b@c.socket", "a", "b@c", "a@.socket", False, True),
    ],
)
def test_name_parts(name, prefix, instance, template, is_template, is_instance) -> None:
    parts = parse_name(name)
    assert (parts.prefix, parts.instance, parts.template) == (prefix, instance, template)
    assert (parts.is_template, parts.is_instance) == (is_template, is_instance)
    assert parts.name == name.rsplit(".", 1)[0]


@pytest.mark.parametrize(
    ("arg", "name"),
    [
        ("hello", "hello.service"),  # the walkthrough: `fleetctl cat hello`
        ("hello.service", "hello.service"),
        ("static/hello.service", "hello.service"),  # a path: the name is its base name
        ("instances/apache@5555.service", "apache@5555.service"),
        ("dir/foo.socket", "foo.socket"),
        ("foo.target", "foo.target"),  # fleet made this foo.target.service: we keep every type
        ("foo.bar", "foo.bar.service"),
        ("apache@80", "apache@80.service"),
    ],
)
def test_mangle_name(arg: str, name: str) -> None:
    assert mangle_name(arg) == name


@settings(max_examples=2000)
@given(st.text(max_size=300))
def test_a_valid_name_never_leaves_its_directory(name: str) -> None:
    try:
        validate_name(name)
    except UnitNameError:
        return
    base = "/run/fleet/units"
    path = os.path.normpath(os.path.join(base, name))
    assert os.path.dirname(path) == base
    assert os.path.basename(path) == name
    assert all(c.isprintable() and not c.isspace() for c in name)
