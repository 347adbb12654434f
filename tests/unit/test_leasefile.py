"""The lease ID a fleetd keeps across its restarts (agent and engine alike): a hint, never a
reason to stop."""

from __future__ import annotations

import pytest

from fleetd.leasefile import LeaseFile


def test_a_saved_lease_id_is_read_back(tmp_path) -> None:
    path = tmp_path / "run" / "fleet" / "lease"  # its directory is made on the first save
    LeaseFile(path).save(0x694D7A8B1C2E3F00)
    assert path.read_text() == "694d7a8b1c2e3f00\n"
    assert LeaseFile(path).load() == 0x694D7A8B1C2E3F00


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, None, id="missing"),  # the first start
        pytest.param("", None, id="empty"),  # a crash in the middle of the write
        pytest.param("not hex\n", None, id="garbled"),
        pytest.param("  1f \n", 0x1F, id="whitespace"),
    ],
)
def test_load(tmp_path, content, expected) -> None:
    path = tmp_path / "lease"
    if content is not None:
        path.write_text(content)
    assert LeaseFile(path).load() == expected


def test_forget_removes_it_and_forgetting_twice_is_fine(tmp_path) -> None:
    lease = LeaseFile(tmp_path / "lease")
    lease.save(7)
    lease.forget()
    lease.forget()
    assert lease.load() is None


def test_no_path_keeps_nothing() -> None:
    lease = LeaseFile(None)
    lease.save(7)
    lease.forget()
    assert lease.load() is None


def test_an_unwritable_file_costs_only_the_reattach(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    lease = LeaseFile(blocker / "lease")  # its directory cannot be made: a file is in the way
    lease.save(7)  # logged, not raised
    assert lease.load() is None
