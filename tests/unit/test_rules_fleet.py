"""fleet 1.0's [X-Fleet] rules as `fleetd.rules` reads them: names, legacy names, specifiers,
multi-values and fleet's validation."""

from __future__ import annotations

import pytest

from fleetd.rules import Requirements, Term, UnitValidationError, glob_match
from fleetd.rules.conflicts import Conflicts
from fleetd.rules.global_ import Global
from fleetd.rules.machine_id import MachineID
from fleetd.rules.machine_of import MachineOf
from fleetd.rules.metadata import MachineMetadata, Need
from fleetd.rules.replaces import Replaces
from fleetd.unit import parse_unit
from tests.seed import seed_unit

APACHE = seed_unit("apache@.service")
HELLO = seed_unit("hello.service")


def req(xfleet: str, name: str = "u.service") -> Requirements:
    return parse_unit("[X-Fleet]\n" + xfleet).requirements(name)


def R(*terms: Term) -> Requirements:
    return Requirements.from_terms(terms)


def md(**wanted: str) -> MachineMetadata:
    """MachineMetadata of equalities: md(role="web|db") accepts web or db."""
    return MachineMetadata(
        tuple(Need(k, frozenset(v.split("|")), ()) for k, v in sorted(wanted.items()))
    )


def test_seed_apache_conflicts_read_as_conflicts() -> None:
    r = APACHE.requirements("apache@80.service")
    assert r == R(Conflicts(("apache@*.service",)))
    conflicts = r.term("Conflicts")
    assert isinstance(conflicts, Conflicts)
    assert conflicts.matches("apache@8888.service")
    assert not conflicts.matches("hello.service")
    r.validate()


def test_seed_hello_has_no_requirements() -> None:
    assert HELLO.requirements("hello.service") == Requirements()


@pytest.mark.parametrize(
    ("xfleet", "name", "expected"),
    [
        # each modern name
        ("MachineID=abc", "u.service", R(MachineID("abc"))),
        ("MachineOf=db.service", "u.service", R(MachineOf(("db.service",)))),
        ("Conflicts=a*.service", "u.service", R(Conflicts(("a*.service",)))),
        ("Replaces=old.service", "u.service", R(Replaces(("old.service",)))),
        ("Global=true", "u.service", R(Global())),
        (
            "MachineMetadata=role=web",
            "u.service",
            R(md(role="web")),
        ),
        # legacy names read as their modern names
        ("X-ConditionMachineID=abc", "u.service", R(MachineID("abc"))),
        ("X-ConditionMachineBootID=abc", "u.service", R(MachineID("abc"))),
        ("X-ConditionMachineOf=db.service", "u.service", R(MachineOf(("db.service",)))),
        ("X-Conflicts=a*.service", "u.service", R(Conflicts(("a*.service",)))),
        (
            "X-ConditionMachineMetadata=role=web",
            "u.service",
            R(md(role="web")),
        ),
        # precedence: MachineID > X-ConditionMachineID > X-ConditionMachineBootID; first value
        (
            "X-ConditionMachineID=b\nMachineID=a\nMachineID=c",
            "u.service",
            R(MachineID("a")),
        ),
        # Global: last value wins, fleet's truthy words
        ("Global=true\nGlobal=false", "u.service", Requirements()),
        ("Global=yes", "u.service", R(Global())),
        ("Global=On", "u.service", R(Global())),
        ("Global=1", "u.service", R(Global())),
        ("Global=t", "u.service", R(Global())),
        ("Global=nope", "u.service", Requirements()),
        # Conflicts: several per line (whitespace) and several lines
        (
            "Conflicts=a.service b.service\nX-Conflicts=c.service",
            "u.service",
            R(Conflicts(("c.service", "a.service", "b.service"))),
        ),
        # metadata: same key OR-ed, keys AND-ed; quoted multi-value form
        (
            'MachineMetadata="role=web" "region=a"\nMachineMetadata=role=db',
            "u.service",
            R(md(region="a", role="web|db")),
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
            R(md(hostname="host1")),
        ),
        (
            "MachineOf=%p-db@%i.service",
            "web@3.service",
            R(MachineOf(("web-db@3.service",))),
        ),
        (
            "Conflicts=%N-*\nReplaces=%n.old",
            "x@1.service",
            R(Conflicts(("x@1-*",)), Replaces(("x@1.service.old",))),
        ),
        ("MachineID=%i", "pin@abcdef12.service", R(MachineID("abcdef12"))),
        # other specifiers are left for systemd
        ("MachineOf=%m-%H.service", "u@1.service", R(MachineOf(("%m-%H.service",)))),
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
    assert r == R(Conflicts(("apache@*.service",)), md(port="80"))
    # the unit body itself is left to systemd, which expands %i on the machine
    assert unit.values("Service", "ExecStart") == ["/usr/bin/python3 -m http.server %i"]


def test_unknown_keys_are_reported_not_fatal() -> None:
    r = req("MachineMetadata=a=b\nFoo=bar\nX-ConditionFoo=1")
    assert r.unknown == ("Foo", "X-ConditionFoo")
    assert r == R(md(a="b"))


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
    term = req('MachineMetadata=role=web\nMachineMetadata="role=db" "region=a"').term(
        "MachineMetadata"
    )
    assert isinstance(term, MachineMetadata)
    assert term.admits(machine_md) is ok


def test_no_metadata_is_no_term() -> None:
    assert req("").term("MachineMetadata") is None


@pytest.mark.parametrize(
    ("wanted", "machine", "ok"),
    [
        ("5ab7f3b47ecc47a0a777884d749db537", "5ab7f3b47ecc47a0a777884d749db537", True),
        ("5ab7f3b4", "5ab7f3b47ecc47a0a777884d749db537", True),  # 8-character short ID
        ("5ab7f3b", "5ab7f3b47ecc47a0a777884d749db537", False),  # other prefixes are not IDs
        ("929c22af", "5ab7f3b47ecc47a0a777884d749db537", False),
    ],
)
def test_machine_id_matching(wanted: str, machine: str, ok: bool) -> None:
    assert MachineID(wanted).matches(machine) is ok


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
