"""examples/seed holds the walkthrough's unit files verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED_DOC = ROOT.parent / "shared" / "seed" / "fleet-walkthrough-ja.md"


@pytest.mark.skipif(not SEED_DOC.exists(), reason=f"the seed walkthrough is not at {SEED_DOC}")
@pytest.mark.parametrize("name", ["hello.service", "apache@.service"])
def test_examples_are_the_seeds_code_blocks(name: str) -> None:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", SEED_DOC.read_text(), re.S)
    assert (ROOT / "examples" / "seed" / name).read_text() in blocks
