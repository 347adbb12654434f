"""The fault modules' fixtures: `cluster`, one sandbox per module (tests/faults/harness.py)."""

from tests.faults.harness import cluster as cluster
