"""A minimal W3C WebDriver client (urllib) for Debian's chromedriver + headless chromium.

Waiting is event-driven: `wait_for(js)` runs an async script in the page that re-checks a
condition on every DOM mutation (MutationObserver) and answers as soon as it holds; the script
timeout is the deadline. Nothing polls.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DEADLINE = 30.0  # seconds: a bound against hanging, never an expectation of speed
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

_WAIT = """
const source = arguments[0], done = arguments[arguments.length - 1];
const condition = new Function(source);
let observer = null;
const check = () => {
  let value = null;
  try { value = condition(); } catch (e) { value = null; }
  if (value) { if (observer) observer.disconnect(); done(value); return true; }
  return false;
};
if (!check()) {
  observer = new MutationObserver(check);
  observer.observe(document, {subtree: true, childList: true, characterData: true,
                              attributes: true});
}
"""


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(AssertionError):
    pass


class Browser:
    """chromedriver (a process of ours) and one headless chromium session."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="fleetd-dashboard-chromium-")
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.session = ""
        try:
            assert self.driver.stdout is not None
            for line in self.driver.stdout:  # it says when it listens
                if "started successfully" in line:
                    break
            else:
                raise WebDriverError("chromedriver exited before it started")
            caps = {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
                        f"--window-size={width},{height}",
                    ],
                },
            }  # fmt: skip
            answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
            self.session = answer["sessionId"]
            self._call("POST", self._s("/timeouts"), {
                "script": int(DEADLINE * 1000), "pageLoad": int(DEADLINE * 1000), "implicit": 0,
            })  # fmt: skip
        except BaseException:
            self.quit()
            raise

    # --- protocol --------------------------------------------------------------------------
    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE + 30) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as err:
            value = json.loads(err.read() or b"{}").get("value") or {}
            raise WebDriverError(
                f"WebDriver {method} {path}: {value.get('error')}: {value.get('message')}"
            ) from None

    # --- commands --------------------------------------------------------------------------
    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def wait_for(self, condition: str, what: str) -> Any:
        """The truthy value of JS `condition` (a function body), as soon as the DOM makes it
        so; WebDriverError naming `what` if the deadline passes first."""
        try:
            return self._call(
                "POST", self._s("/execute/async"), {"script": _WAIT, "args": [condition]}
            )
        except WebDriverError as err:
            body = self.execute("return document.body.innerText")
            raise WebDriverError(f"{what}: {err}\n--- page text ---\n{body}") from None

    def find(self, css: str) -> str:
        found = self._call("POST", self._s("/element"), {"using": "css selector", "value": css})
        return found[ELEMENT]

    def click(self, css: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/click"))

    def type(self, css: str, text: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/value"), {"text": text})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", self._s("/screenshot"))))

    def quit(self) -> None:
        try:
            if self.session:
                self._call("DELETE", self._s(""))
                self.session = ""
        finally:
            if self.driver.poll() is None:
                self.driver.terminate()
                try:
                    self.driver.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.driver.kill()
                    self.driver.wait()
            if self.driver.stdout is not None:
                self.driver.stdout.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit()
