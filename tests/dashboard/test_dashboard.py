"""`fleetctl dashboard` in a real headless Chromium against a real 3-machine sandbox.

The page is driven over chromedriver's W3C WebDriver API; every wait is `Browser.wait_for`, a
MutationObserver in the page that answers when the DOM shows the expected state (the deadline is
only a bound against hanging). The tests run in order on one cluster, one page.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.dashboard.harness import BIN, Cluster, DashboardProcess
from tests.dashboard.webdriver import Browser, available

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not available(),
        reason="chromium and chromedriver are not installed (Debian packages chromium and "
        "chromium-driver; `make system-deps` as root installs them)",
    ),
]


def row(unit: str, col: str) -> str:
    """JS: the text of a column of a unit's row ('' while the row is absent)."""
    return (
        f'(document.querySelector(\'tr[data-unit="{unit}"] [data-col="{col}"]\') || '
        "{textContent: ''}).textContent"
    )


def status_of(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_requests_without_the_token_are_refused(
    cluster: Cluster, dashboard: DashboardProcess
) -> None:
    cluster.fleetctl("submit", "hello.service")
    base, token = dashboard.base, dashboard.token
    assert status_of(f"{base}/?token={token}") == 200
    assert status_of(f"{base}/") == 403
    assert status_of(f"{base}/?token=not-{token}") == 403
    assert status_of(f"{base}/events") == 403
    assert status_of(f"{base}/static/app.js") == 403
    assert status_of(f"{base}/api/units/hello.service/status") == 403
    assert status_of(f"{base}/api/units/hello.service/start", method="POST") == 403
    # a page of another origin that learnt the port cannot rebind a name onto it
    assert status_of(f"{base}/?token={token}", headers={"Host": "evil.example:80"}) == 403
    # the refused start changed nothing
    files = cluster.fleetctl("list-unit-files").stdout
    assert any(line.split()[:3] == ["hello.service", "44d32a9", "inactive"]
               for line in files.splitlines()), files  # fmt: skip


def test_page_lists_machines_and_units(
    cluster: Cluster, dashboard: DashboardProcess, browser: Browser
) -> None:
    browser.get(dashboard.url)
    machines = browser.wait_for(
        "const rows = document.querySelectorAll('#machines tbody tr');"
        "return rows.length === 3 && [...rows].map(r => r.innerText).join('\\n');",
        "three machines listed",
    )
    for ip, meta in (("127.0.0.11", "role=web"), ("127.0.0.12", "role=db"),
                     ("127.0.0.13", "role=misc")):  # fmt: skip
        assert ip in machines and meta in machines, machines
    # the facts fleetd measured are not in the metadata column, but in its tooltip
    assert "fleet." not in machines, machines
    tooltip = browser.execute(
        "return document.querySelector('#machines tbody tr td:nth-child(3)').title"
    )
    assert tooltip.startswith("measured: fleet.cpus="), tooltip
    assert (
        browser.wait_for(
            f"return {row('hello.service', 'dstate')} === 'inactive' && "
            f"{row('hello.service', 'hash')}",
            "hello.service listed, inactive",
        )
        == "44d32a9"
    )
    assert browser.execute("return document.getElementById('banner').hidden") is True


def test_started_unit_shows_active_running_without_reload(
    cluster: Cluster, browser: Browser
) -> None:
    browser.execute("window.notReloaded = true")
    cluster.fleetctl("start", "hello.service")
    target = browser.wait_for(
        f"return {row('hello.service', 'active')} === 'active' && "
        f"{row('hello.service', 'sub')} === 'running' && {row('hello.service', 'target')}",
        "hello.service active/running on the page",
    )
    assert "/127.0.0.1" in target
    assert browser.execute(f"return {row('hello.service', 'state')}") == "launched"
    assert browser.execute("return window.notReloaded") is True
    machines = browser.execute(
        "return [...document.querySelectorAll('#machines [data-col=units]')]"
        ".map(c => c.textContent)"
    )
    assert machines.count("hello.service") == 1, machines


def test_detail_shows_unit_file_status_and_new_journal_lines(browser: Browser) -> None:
    browser.click('tr[data-unit="hello.service"] button')
    unit_file = browser.wait_for(
        "return document.getElementById('unit-file').textContent", "the unit file shown"
    )
    assert "[Service]\nExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'" in (
        unit_file
    )
    status = browser.wait_for(
        "const t = document.getElementById('unit-status').textContent;"
        "return t.includes('Active: active (running)') && t",
        "the status text shown",
    )
    assert "hello.service - Hello World" in status
    first = browser.wait_for(
        "const lines = document.getElementById('journal').textContent.split('\\n')"
        ".filter(l => l.includes('Hello World'));"
        "return lines.length > 0 && lines;",
        "journal lines shown",
    )
    newer = browser.wait_for(
        f"const seen = {json.dumps(first)};"
        "const lines = document.getElementById('journal').textContent.split('\\n')"
        ".filter(l => l.includes('Hello World') && !seen.includes(l));"
        "return lines.length > 0 && lines;",
        "a new journal line arriving",
    )
    assert all("Hello World" in line for line in newer)


def test_stop_button_stops_the_unit(cluster: Cluster, browser: Browser) -> None:
    browser.click('#detail [data-action="stop"]')
    browser.wait_for(
        f"return {row('hello.service', 'dstate')} === 'loaded' && "
        f"{row('hello.service', 'active')} === 'inactive'",
        "hello.service stopped on the page",
    )
    units = cluster.fleetctl("list-units", "--no-legend", "--fields", "unit,active,sub").stdout
    assert units.split() == ["hello.service", "inactive", "dead"], units
    files = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "unit,dstate").stdout
    assert files.split() == ["hello.service", "loaded"], files


def test_filters(browser: Browser) -> None:
    browser.type("#filter-name", "nothing-is-called-that")
    browser.wait_for(
        "return !document.querySelector('tr[data-unit]') && "
        "!document.getElementById('units-empty').hidden",
        "the name filter hides hello.service",
    )
    browser.execute(
        "const f = document.getElementById('filter-name'); f.value = 'hello';"
        "f.dispatchEvent(new Event('input'));"
        "const s = document.getElementById('filter-state'); s.value = 'loaded';"
        "s.dispatchEvent(new Event('input'));"
    )
    browser.wait_for(
        "return !!document.querySelector('tr[data-unit=\"hello.service\"]')",
        "hello.service matches name hello, state loaded",
    )
    browser.execute(
        "for (const id of ['filter-name', 'filter-state']) {"
        " const f = document.getElementById(id); f.value = '';"
        " f.dispatchEvent(new Event('input')); }"
    )


def test_destroy_asks_for_confirmation(cluster: Cluster, browser: Browser) -> None:
    browser.click('#detail [data-action="destroy"]')
    browser.wait_for("return document.getElementById('confirm').open", "the confirmation dialog")
    browser.click("#confirm-cancel")
    browser.wait_for("return !document.getElementById('confirm').open", "the dialog closed")
    assert "hello.service" in cluster.fleetctl("list-unit-files").stdout
    browser.click('#detail [data-action="destroy"]')
    browser.wait_for("return document.getElementById('confirm').open", "the confirmation dialog")
    browser.click("#confirm-destroy")
    browser.wait_for(
        "return !document.querySelector('tr[data-unit=\"hello.service\"]')",
        "hello.service gone from the page",
    )
    assert "hello.service" not in cluster.fleetctl("list-unit-files").stdout


def test_banner_while_fleetd_is_unreachable_then_recovery(
    cluster: Cluster, browser: Browser, tmp_path: Path
) -> None:
    cluster.fleetctl("submit", "global.service")
    socket_path = tmp_path / "fleet.sock"  # nothing there yet: fleetd is unreachable
    env = dict(cluster.env, FLEETCTL_ENDPOINT=f"unix://{socket_path}")
    dash = DashboardProcess(env)
    try:
        browser.get(dash.url)
        banner = browser.wait_for(
            "const b = document.getElementById('banner');"
            "return !b.hidden && b.textContent.includes('fleetd is unreachable') && b.textContent",
            "the unreachable banner",
        )
        assert str(socket_path) in banner
        # fleetd "comes back": the path now leads to machine m1's API socket
        real = cluster.env["FLEETCTL_ENDPOINT"].removeprefix("unix://")
        os.symlink(real, socket_path)
        browser.wait_for(
            "return document.getElementById('banner').hidden && "
            f"{row('global.service', 'target')} === 'global'",
            "the banner gone and the units shown",
        )
    finally:
        dash.stop()


def test_fleetd_restart_shows_the_banner_then_recovers(
    cluster: Cluster, dashboard: DashboardProcess, browser: Browser
) -> None:
    browser.get(dashboard.url)
    browser.wait_for(
        f"return {row('global.service', 'target')} === 'global'", "the page showing the units"
    )
    # record the banner's appearance as it happens (it may be short: fleetd comes back fast)
    browser.execute(
        "const b = document.getElementById('banner');"
        "window.bannerTexts = [];"
        "new MutationObserver(() => { if (!b.hidden) window.bannerTexts.push(b.textContent); })"
        ".observe(b, {attributes: true, childList: true, characterData: true, subtree: true});"
    )
    subprocess.run(
        [str(BIN / "fleetd"), "sandbox", "restart", "--dir", str(cluster.directory), "m1"],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    texts = browser.wait_for(
        "return window.bannerTexts.length > 0 && document.getElementById('banner').hidden"
        f" && document.body.dataset.reachable === 'true' && {row('global.service', 'target')}"
        " === 'global' && window.bannerTexts",
        "the banner shown while m1's fleetd restarted, then gone",
    )
    assert any("fleetd is unreachable" in text for text in texts), texts
    # live again: a change made now shows without a reload
    cluster.fleetctl("destroy", "global.service")
    browser.wait_for(
        "return !document.querySelector('tr[data-unit=\"global.service\"]')",
        "global.service gone after the restart",
    )


def test_an_unplaced_unit_shows_why_where_its_machine_would_be(
    cluster: Cluster, dashboard: DashboardProcess, browser: Browser
) -> None:
    # no machine of the sandbox has role=nosuch: the row says so, in the planner's words
    (cluster.units / "nowhere.service").write_text(
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=nosuch\n"
    )
    browser.get(dashboard.url)
    cluster.fleetctl("start", "--no-block", "nowhere.service")
    target = browser.wait_for(
        f"const t = {row('nowhere.service', 'target')};return t.startsWith('not placed: ') && t",
        "nowhere.service shown with its reason",
    )
    assert target == "not placed: no machine matches MachineMetadata role=nosuch"
    browser.click('tr[data-unit="nowhere.service"] button')
    summary = browser.wait_for(
        "const t = document.getElementById('detail-summary').textContent;"
        "return t.includes('not placed') && t",
        "the detail says why",
    )
    assert summary.startswith(
        "desired launched, current inactive, not placed: no machine matches MachineMetadata "
        "role=nosuch;"
    ), summary
    # unloaded (the page's button: `fleetctl unload` skips a unit whose current state is
    # already inactive, as fleet did): it wants no machine any more, and the reason goes
    browser.click('#detail [data-action="unload"]')
    browser.wait_for(
        f"return {row('nowhere.service', 'dstate')} === 'inactive' && "
        f"{row('nowhere.service', 'target')} === '-'",
        "nowhere.service inactive, no reason",
    )
    # back to launched, for the narrow layout below to show a reason too
    cluster.fleetctl("start", "--no-block", "nowhere.service")
    browser.wait_for(
        f"return {row('nowhere.service', 'target')}.startsWith('not placed: ')",
        "the reason shown again",
    )


def machine_at(ip: str) -> str:
    """JS: the machines table's row of the machine with that IP."""
    return (
        "[...document.querySelectorAll('#machines tbody tr')]"
        f".find(r => r.children[1].textContent === '{ip}')"
    )


def restart_m1(cluster: Cluster, **env: str) -> None:
    """`fleetd sandbox restart m1`, its fleetd given `env` (fleet.conf's FLEET_* settings)."""
    subprocess.run(
        [str(BIN / "fleetd"), "sandbox", "restart", "--dir", str(cluster.directory), "m1"],
        check=True, timeout=120, capture_output=True, env={**os.environ, **env},
    )  # fmt: skip


def test_each_machine_shows_what_its_units_reserve_over_committed_in_warning_colour(
    cluster: Cluster, dashboard: DashboardProcess, browser: Browser
) -> None:
    # every sandbox machine measured its memory and CPUs: a bar of each, nothing reserved yet
    browser.get(dashboard.url)
    labels = browser.wait_for(
        "const l = [...document.querySelectorAll('#machines [data-col=use] .use-label')];"
        "return l.length === 6 && l.map(x => x.textContent)",
        "two bars on each of the three machines",
    )
    assert [text.split()[0] for text in labels] == ["CPU", "Memory"] * 3, labels
    assert all(text.split()[1].startswith("0/") for text in labels), labels
    # a unit reserving 64M and a quarter of a CPU on m1 (role=web)
    (cluster.units / "reserving.service").write_text(
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMemoryReservation=64M\n"
        "CPUReservation=0.25\nMachineMetadata=role=web\n"
    )
    cluster.fleetctl("start", "reserving.service")
    m1 = machine_at("127.0.0.11")
    memory = browser.wait_for(
        f"const r = {m1}; const u = r && r.querySelector('[data-dim=memory]');"
        "return u && u.textContent.startsWith('Memory 64M/') && "
        "[u.textContent, u.querySelector('.bar').getAttribute('aria-valuenow'),"
        " parseFloat(u.querySelector('.fill').style.width), u.className]",
        "m1's memory bar showing the 64M reserved",
    )
    assert (memory[1], memory[2] > 0, memory[3]) == (str(64 << 20), True, "use"), memory
    cpu = browser.execute(f"return {m1}.querySelector('[data-dim=cpus] .use-label').textContent")
    assert cpu.startswith("CPU 0.25/"), cpu
    # m1's fleetd restarts holding back more memory than it has: the unit running there is not
    # moved for room, and m1 is over-committed — in the warning colour
    restart_m1(cluster, FLEET_RESERVED_MEMORY="1T")
    over = browser.wait_for(
        f"const r = {m1}; const u = r && r.querySelector('.use.over');"
        "return u && [u.dataset.dim, u.textContent, r.classList.contains('overcommitted'),"
        " getComputedStyle(u.querySelector('.use-label')).color,"
        " getComputedStyle(u.querySelector('.fill')).backgroundColor,"
        " parseFloat(u.querySelector('.fill').style.width)]",
        "m1 over-committed",
    )
    warn = "rgb(154, 103, 0)"  # style.css --warn
    assert over == ["memory", "Memory 64M/0 over-committed", True, warn, warn, 100], over
    assert browser.execute(f"return {m1}.querySelectorAll('.use.over').length") == 1  # CPUs fit
    # back to its configuration: no longer over-committed
    restart_m1(cluster)
    browser.wait_for(
        f"const r = {m1}; return !!r && !r.querySelector('.use.over') && "
        "!r.classList.contains('overcommitted') && "
        "r.querySelector('[data-dim=memory]').textContent.startsWith('Memory 64M/')",
        "m1 within its capacity again",
    )
    cluster.fleetctl("destroy", "reserving.service")


def test_a_rollout_waiting_for_promote_is_shown_with_its_progress(
    cluster: Cluster, dashboard: DashboardProcess, browser: Browser
) -> None:
    unit = "[Service]\nExecStart=/bin/sleep {n}\n\n[X-Fleet]\nGlobal=true\n"
    (cluster.units / "roll.service").write_text(unit.format(n=1000))
    cluster.fleetctl("start", "roll.service")
    browser.get(dashboard.url)
    assert browser.execute("return document.getElementById('rollouts-section').hidden") is True
    (cluster.units / "roll.service").write_text(
        unit.format(n=2000) + "UpdateCanary=1\nUpdateMinHealthyTime=1s\n"
    )
    cluster.fleetctl("rolling-replace", "roll.service")  # ends once the canary is healthy
    cells = browser.wait_for(
        "const r = document.querySelector('tr[data-rollout=\"roll.service\"]');"
        "return r && r.querySelector('[data-col=state]').textContent === 'canary' && "
        "[...r.children].map(c => c.textContent)",
        "the rollout shown, waiting for promote",
    )
    assert cells == [
        "roll.service",
        "update",
        "canary",
        "1/3 updated, 2 pending",
        "1 canaries healthy: waiting for rollout promote",
    ]
    # undone: back on the first version everywhere, and no rollout left to show
    cluster.fleetctl("rollout", "undo", "roll.service")
    browser.wait_for(
        "return document.getElementById('rollouts-section').hidden", "the panel hidden again"
    )


@pytest.mark.parametrize("width", [380])
def test_readable_on_a_narrow_window(
    dashboard: DashboardProcess, browser: Browser, width: int
) -> None:
    browser.execute("return 0")
    browser.get(dashboard.url)
    browser.wait_for(
        "return document.querySelectorAll('#machines tbody tr').length === 3",
        "machines listed",
    )
    # the page never needs horizontal scrolling as a whole: wide tables scroll in their box
    browser._call("POST", browser._s("/window/rect"), {"width": width, "height": 800})
    overflow = browser.execute(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, overflow
    labels = browser.execute(
        "return [...document.querySelectorAll('input, select')]"
        ".every(c => c.labels && c.labels.length > 0)"
    )
    assert labels is True
