"""[X-Fleet] requirements: names, legacy names, specifiers, multi-values and fleet's validation."""

from __future__ import annotations

import pytest

from fleetd.unit import parse_unit
from fleetd.unit_requirements import Requirements, UnitValidationError, glob_match
from tests.seed import seed_unit

APACHE = seed_unit("apache@.service")
HELLO = seed_unit("hello.service")


def req(xfleet: str, name: str = "u.service") -> Requirements:
    return parse_unit("[X-Fleet]\n" + xfleet).requirements(name)


def test_seed_apache_conflicts_read_as_conflicts() -> None:
    r = APACHE.requirements("apache@80.service")
    assert r.conflicts == ("apache@*.service",)
    assert r.conflicts_with("apache@8888.service")
    assert not r.conflicts_with("hello.service")
    r.validate()


def test_seed_hello_has_no_requirements() -> None:
    assert HELLO.requirements("hello.service") == Requirements()


@pytest.mark.parametrize(
    ("xfleet", "name", "expected"),
    [
        # each modern name
        ("MachineID=abc", "u.service", Requirements(machine_id="abc")),
        ("MachineOf=db.service", "u.service", Requirements(machine_of=("db.service",))),
        ("Conflicts=a*.service", "u.service", Requirements(conflicts=("a*.service",))),
        ("Replaces=old.service", "u.service", Requirements(replaces=("old.service",))),
        ("Global=true", "u.service", Requirements(is_global=True)),
        (
            "MachineMetadata=role=web",
            "u.service",
            Requirements(metadata=(("role", frozenset({"web"})),)),
        ),
        # legacy names read as their modern names
        ("X-ConditionMachineID=abc", "u.service", Requirements(machine_id="abc")),
        ("X-ConditionMachineBootID=abc", "u.service", Requirements(machine_id="abc")),
        ("X-ConditionMachineOf=db.service", "u.service", Requirements(machine_of=("db.service",))),
        ("X-Conflicts=a*.service", "u.service", Requirements(conflicts=("a*.service",))),
        (
            "X-ConditionMachineMetadata=role=web",
            "u.service",
            Requirements(metadata=(("role", frozenset({"web"})),)),
        ),
        # precedence: MachineID > X-ConditionMachineID > X-ConditionMachineBootID; first value
        (
            "X-ConditionMachineID=b\nMachineID=a\nMachineID=c",
            "u.service",
            Requirements(machine_id="a"),
        ),
        # Global: last value wins, fleet's truthy words
        ("Global=true\nGlobal=false", "u.service", Requirements()),
        ("Global=yes", "u.service", Requirements(is_global=True)),
        ("Global=On", "u.service", Requirements(is_global=True)),
        ("Global=1", "u.service", Requirements(is_global=True)),
        ("Global=t", "u.service", Requirements(is_global=True)),
        ("Global=nope", "u.service", Requirements()),
        # Conflicts: several per line (whitespace) and several lines
        (
            "Conflicts=a.service b.service\nX-Conflicts=c.service",
            "u.service",
            Requirements(conflicts=("c.service", "a.service", "b.service")),
        ),
        # metadata: same key OR-ed, keys AND-ed; quoted multi-value form
        (
            'MachineMetadata="role=web" "region=a"\nMachineMetadata=role=db',
            "u.service",
            Requirements(
                metadata=(("region", frozenset({"a"})), ("role", frozenset({"web", "db"})))
            ),
        ),
        # malformed metadata pairs are ignored, as fleet does
        (
            "MachineMetadata=novalue\nMachineMetadata=a=b=c\nMachineMetadata==x\nMachineMetadata=k=",
            "u.service",
            Requirements(),
        ),
        # specifiers %n %N %p %i in instances
        (
            "MachineMetadata=hostname=%i",
            "metadata@host1.service",
            Requirements(metadata=(("hostname", frozenset({"host1"})),)),
        ),
        (
            "MachineOf=%p-db@%i.service",
            "web@3.service",
            Requirements(machine_of=("web-db@3.service",)),
        ),
        (
            "Conflicts=%N-*\nReplaces=%n.old",
            "x@1.service",
            Requirements(conflicts=("x@1-*",), replaces=("x@1.service.old",)),
        ),
        ("MachineID=%i", "pin@abcdef12.service", Requirements(machine_id="abcdef12")),
        # other specifiers are left for systemd
        ("MachineOf=%m-%H.service", "u@1.service", Requirements(machine_of=("%m-%H.service",))),
    ],
)
def test_requirements_table(xfleet: str, name: str, expected: Requirements) -> None:
    assert req(xfleet, name) == expected


def test_apache_instance_expands_i_in_xfleet_only() -> None:
    unit = parse_unit(
        "[Service]\nExecStart=/usr/bin/python3 -m http.server %i\n"
        "[X-Fleet]\nConflicts=apache@*.service\nMachineMetadata=port=%i\n"
    )
    r = unit.requirements("apache@80.service")
    assert r.metadata_dict == {"port": frozenset({"80"})}
    # the unit body itself is left to systemd, which expands %i on the machine
    assert unit.values("Service", "ExecStart") == ["/usr/bin/python3 -m http.server %i"]


def test_unknown_keys_are_reported_not_fatal() -> None:
    r = req("MachineMetadata=a=b\nFoo=bar\nX-ConditionFoo=1")
    assert r.unknown == ("Foo", "X-ConditionFoo")
    assert r.metadata_dict == {"a": frozenset({"b"})}


@pytest.mark.parametrize(
    ("machine_md", "ok"),
    [
        ({"role": "web", "region": "a"}, True),
        ({"role": "db", "region": "a"}, True),  # OR within a key
        ({"role": "misc", "region": "a"}, False),
        ({"role": "web"}, False),  # AND across keys: region missing
        ({}, False),
    ],
)
def test_metadata_matching(machine_md: dict[str, str], ok: bool) -> None:
    r = req('MachineMetadata=role=web\nMachineMetadata="role=db" "region=a"')
    assert r.metadata_matches(machine_md) is ok


def test_no_metadata_matches_every_machine() -> None:
    assert Requirements().metadata_matches({})


@pytest.mark.parametrize(
    ("wanted", "machine", "ok"),
    [
        ("", "5ab7f3b47ecc47a0a777884d749db537", True),
        ("5ab7f3b47ecc47a0a777884d749db537", "5ab7f3b47ecc47a0a777884d749db537", True),
        ("5ab7f3b4", "5ab7f3b47ecc47a0a777884d749db537", True),  # 8-character short ID
        ("5ab7f3b", "5ab7f3b47ecc47a0a777884d749db537", False),  # other prefixes are not IDs
        ("929c22af", "5ab7f3b47ecc47a0a777884d749db537", False),
    ],
)
def test_machine_id_matching(wanted: str, machine: str, ok: bool) -> None:
    assert Requirements(machine_id=wanted).machine_id_matches(machine) is ok


@pytest.mark.parametrize(
    ("xfleet", "message"),
    [
        ("MachineID=a\nMachineOf=b.service", "MachineID cannot be used with Peers"),
        ("MachineID=a\nConflicts=b*", "MachineID cannot be used with Conflicts"),
        ("MachineID=a\nGlobal=true", "MachineID cannot be used with Global"),
        ("MachineID=a\nReplaces=b.service", "MachineID cannot be used with Replaces"),
        ("Global=true\nMachineOf=b.service", "Global cannot be used with Peers"),
        ("Global=true\nReplaces=b.service", "Global cannot be used with Replaces"),
        ("Conflicts=a*\nReplaces=b.service", "Conflicts cannot be used with Replaces"),
        (
            "MachineOf=db.service\nConflicts=d*.service",
            'unresolvable requirements: peer "db.service" matches conflict "d*.service"',
        ),
        (
            "MachineOf=db.service\nReplaces=db.service",
            'unresolvable requirements: peer "db.service" matches replace "db.service"',
        ),
    ],
)
def test_invalid_combinations(xfleet: str, message: str) -> None:
    with pytest.raises(UnitValidationError) as err:
        req(xfleet).validate()
    assert str(err.value) == message


@pytest.mark.parametrize(
    "xfleet",
    [
        "Global=true\nConflicts=x*",
        "Global=true\nMachineMetadata=a=b",
        "MachineOf=a.service\nConflicts=b*",
        "MachineID=abc\nMachineMetadata=a=b",
        "Replaces=a.service\nMachineOf=b.service",
    ],
)
def test_valid_combinations(xfleet: str) -> None:
    req(xfleet).validate()


@pytest.mark.parametrize(
    ("pattern", "name", "ok"),
    [
        ("apache@*.service", "apache@80.service", True),
        ("apache@*.service", "apache@.service", True),
        ("apache@*.service", "hello.service", False),
        ("hello.service", "hello.service", True),
        ("hello?.service", "hello1.service", True),
        ("hello[0-9].service", "hello5.service", True),
        ("hello[^0-9].service", "hello5.service", False),  # Go negates with "^"
        ("hello[^0-9].service", "hellox.service", True),
        ("hello[!0-9].service", "hello!.service", True),  # ... so "!" is just a character
        ("a\\*b", "a*b", True),  # escapes
        ("a\\*b", "axb", False),
        ("[", "[", False),  # a malformed pattern matches nothing, as Go's path.Match errs
        ("[]", "]", False),
        ("[z-a]", "b", False),
        ("x\\", "x", False),
    ],
)
def test_glob_match(pattern: str, name: str, ok: bool) -> None:
    assert glob_match(pattern, name) is ok
