"""`fleetctl restart` of Global units that cannot be restarted, through the real entry point
against a real API server, registry and etcd (the rolling restart itself, on real machines:
tests/e2e/test_restart.py)."""

from __future__ import annotations

from tests.cli.conftest import Cluster

GLOBAL = "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nGlobal=true\n"


async def test_global_unit_running_nowhere_or_not_launched(cluster: Cluster) -> None:
    (cluster.workdir / "g.service").write_text(GLOBAL)
    (cluster.workdir / "h.service").write_text(GLOBAL)
    assert (await cluster.fleetctl("start", "g.service"))[0] == 0
    assert (await cluster.fleetctl("load", "h.service"))[0] == 0
    # no machine reports g (no agent runs Global units here); h is only loaded
    rc, out, err = await cluster.fleetctl("restart", "g.service", "h.service")
    assert (rc, out) == (1, "")
    assert err.splitlines() == [
        "Unable to restart global unit g.service: no machine runs it",
        "Unable to restart unit h.service in state loaded",
    ]
    rc, out, err = await cluster.fleetctl("restart", "--no-block", "g.service")
    assert (rc, out, err) == (
        1,
        "",
        "Unable to restart global unit g.service: no machine runs it\n",
    )
    assert (await cluster.registry.snapshot()).restarts == {}  # nothing was asked
