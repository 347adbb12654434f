"""The versioned JSON documents of fleetd.model: round trips and precise errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.model import (
    SCHEMA_VERSION,
    Job,
    JobState,
    LeaderInfo,
    Machine,
    ModelError,
    Placement,
    RestartRequest,
    UnitContent,
    UnitState,
)
from fleetd.unit import parse_unit

HELLO = parse_unit("[Unit]\nDescription=Hello World\n\n[Service]\nExecStart=/bin/true\n")
MID = "5ab7f3b47ecc47a0a777884d749db537"

DOCS = [
    pytest.param(Job("hello.service", HELLO.hash, JobState.LAUNCHED), id="job"),
    pytest.param(UnitContent(HELLO), id="unit"),
    pytest.param(Placement("hello.service", MID), id="schedule"),
    pytest.param(
        Machine(MID, "127.0.0.11", {"role": "web", "machine": "m1"}, "0.1.0"), id="machine"
    ),
    pytest.param(
        UnitState("hello.service", MID, HELLO.hash, "loaded", "active", "running"), id="state"
    ),
    pytest.param(LeaderInfo(MID, "0.1.0"), id="leader"),
    pytest.param(RestartRequest("hello.service", MID, "4f1c0a"), id="restart"),
]


@pytest.mark.parametrize("doc", DOCS)
def test_roundtrip_carries_schema_version(doc) -> None:
    raw = doc.encode()
    assert json.loads(raw)["v"] == SCHEMA_VERSION
    assert type(doc).decode(raw) == doc


@pytest.mark.parametrize("doc", DOCS)
def test_missing_field_is_named(doc) -> None:
    data = json.loads(doc.encode())
    for field in [k for k in data if k != "v"]:
        broken = {k: v for k, v in data.items() if k != field}
        with pytest.raises(ModelError, match=f"{doc.kind} document lacks field '{field}'"):
            type(doc).decode(json.dumps(broken))


@pytest.mark.parametrize(
    ("cls", "raw", "message"),
    [
        (Job, b"not json", "job document is not JSON"),
        (Job, b"[1]", "job document must be a JSON object"),
        (Job, b'{"name":"a.service","unit":"x","desired":"inactive"}', "schema version None"),
        (Job, b'{"v":2,"name":"a.service","unit":"x","desired":"inactive"}', "schema version 2"),
        (
            Job,
            b'{"v":1,"name":"a.service","unit":"x","desired":"running"}',
            "field 'desired': invalid value 'running' for unit state",
        ),
        (
            Job,
            b'{"v":1,"name":7,"unit":"x","desired":"loaded"}',
            "field 'name' must be str, got int",
        ),
        (
            Machine,
            b'{"v":1,"id":"a","public_ip":"","metadata":{"a":1},"version":""}',
            "field 'metadata' must map strings to strings",
        ),
        (UnitContent, b'{"v":1,"options":[["S","A"]]}', "must hold [section, name, value]"),
        (
            UnitContent,
            b'{"v":1,"options":[["S","A=B","1"]]}',
            "unit document holds invalid options",
        ),
        (
            UnitState,
            b'{"v":1,"name":"a","machine":"m","hash":"h","load":true,"active":"a","sub":"s"}',
            "field 'load' must be str, got bool",
        ),
        (Job, b"\xff\xfe", "job document is not JSON"),
    ],
)
def test_malformed_documents(cls, raw: bytes, message: str) -> None:
    with pytest.raises(ModelError) as err:
        cls.decode(raw)
    assert message in str(err.value)


def test_unit_state_restarted_is_optional_and_backward_compatible() -> None:
    plain = UnitState("hello.service", MID, HELLO.hash, "loaded", "active", "running")
    assert "restarted" not in json.loads(plain.encode())  # the document of before, unchanged
    done = UnitState(
        "hello.service", MID, HELLO.hash, "loaded", "active", "running", restarted="t1"
    )
    assert json.loads(done.encode())["restarted"] == "t1"
    assert UnitState.decode(done.encode()) == done
    assert UnitState.decode(plain.encode()).restarted == ""  # absent = ""
    broken = {**json.loads(done.encode()), "restarted": 5}
    with pytest.raises(ModelError, match="field 'restarted' must be str, got int"):
        UnitState.decode(json.dumps(broken))


def test_restart_request_needs_a_token() -> None:
    raw = b'{"v":1,"name":"a.service","machine":"m","token":""}'
    with pytest.raises(ModelError, match="restart document field 'token' must not be empty"):
        RestartRequest.decode(raw)


def test_job_states_order_and_parse() -> None:
    assert [str(s) for s in JobState] == ["inactive", "loaded", "launched"]
    assert JobState.parse("loaded") is JobState.LOADED
    with pytest.raises(ModelError):
        JobState.parse("started")


def test_machine_short_id() -> None:
    assert Machine(MID).short_id == "5ab7f3b4"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_model_error(raw: bytes) -> None:
    for cls in (Job, UnitContent, Placement, Machine, UnitState, LeaderInfo, RestartRequest):
        try:
            cls.decode(raw)
        except ModelError:
            pass
