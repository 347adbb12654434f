"""The README's screenshot: `fleetctl dashboard` on a 3-machine sandbox running the
walkthrough's units (hello, the apache@ instances, global, dbonly), hello.service's detail open.

    .venv/bin/python -m tests.dashboard.screenshot docs/dashboard.png   (as root)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from fleetd.demo import PORTS
from tests.dashboard.harness import DashboardProcess, sandbox
from tests.dashboard.webdriver import Browser


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fleetd-shot-") as tmp:
        with sandbox(Path(tmp) / "sandbox", Path(tmp) / "units") as cluster:
            instances = [f"instances/apache@{port}.service" for port in PORTS]
            cluster.fleetctl("start", "hello.service", *instances)
            cluster.fleetctl("start", "global.service", "dbonly.service")
            dash = DashboardProcess(cluster.env)
            try:
                with Browser(width=1280, height=1400) as browser:
                    browser.get(dash.url)
                    names = ["hello.service", *(i.split("/")[1] for i in instances),
                             "dbonly.service"]  # fmt: skip
                    browser.wait_for(
                        f"return {names!r}.every(n => {{"
                        ' const c = document.querySelector(`tr[data-unit="${n}"] [data-col=sub]`);'
                        " return c && c.textContent === 'running'; })"
                        ' && document.querySelector(\'tr[data-unit="global.service"] '
                        "[data-col=sub]')?.textContent === 'running'",
                        "every unit running",
                    )
                    browser.click('tr[data-unit="hello.service"] button')
                    browser.wait_for(
                        "return document.getElementById('journal').textContent"
                        ".split('Hello World').length > 4 && document.getElementById"
                        "('unit-status').textContent.includes('Active:')",
                        "journal lines and status",
                    )
                    browser.execute("document.activeElement.blur(); window.scrollTo(0, 0)")
                    browser.screenshot(out)
            finally:
                dash.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png"))
