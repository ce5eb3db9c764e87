"""Headless Chromium, offline: render a page, collect every error it logs, dump its DOM or screenshot it.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe` (stdlib only: JSON messages
separated by NUL bytes on file descriptors 3 and 4), because its `--enable-logging` output does not say which
console messages are errors and never mentions failed resource loads. Errors collected here: uncaught
exceptions and promise rejections, `console.error`/`console.assert`, and browser log entries of level error
(e.g. "Failed to load resource" when a page tries the network). Networking is unavailable to the page: a dead
proxy, no background networking.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_lens_routing.atomic import atomic_write_bytes

OFFLINE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",  # any network access fails
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "headless Chromium not found: install Debian's `chromium` (apt-get install -y chromium)"
    )


@dataclass
class Rendered:
    dom: str
    console_errors: list[str]
    png: bytes | None = None
    script_result: Any = None


@dataclass
class _DevTools:
    """One Chromium process and its DevTools pipe; `call` sends a command and returns its result, recording the
    events that arrive meanwhile."""

    proc: subprocess.Popen[bytes]
    to_chrome: int
    from_chrome: int
    deadline: float
    events: list[dict[str, Any]] = field(default_factory=list)
    _buffer: bytes = b""
    _next_id: int = 0

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_chrome], [], [], left)[0]:
                raise TimeoutError("headless Chromium did not answer in time")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"headless Chromium exited (code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of `expression` in the page (awaited if a promise); raises if it throws."""
        reply = self.call(
            "Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"script failed in the page: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, method: str) -> None:
        while not any(e["method"] == method for e in self.events):
            self.events.append(self._read_message())


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
    return errors


def _high_pipe() -> tuple[int, int]:
    """A pipe on descriptors >= 100, so the shell's `3<&r 4>&w` redirections never clobber one of them."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100))
        os.close(fd)
    return ends[0], ends[1]


def render(
    html: str | Path,
    *,
    screenshot: bool = False,
    width: int = 1400,
    height: int = 1600,
    settle_ms: int = 500,
    script: str | None = None,
    timeout: int = 120,
) -> Rendered:
    """Load `html` (a file) offline, let its scripts run, optionally evaluate `script` in the page (its value,
    awaited if a promise, is returned as `script_result`), and return the DOM, errors and optionally a PNG."""
    page = Path(html).resolve()
    if not page.is_file():
        raise ValueError(f"html must be an existing file, got {page}")
    to_chrome_r, to_chrome_w = _high_pipe()
    from_chrome_r, from_chrome_w = _high_pipe()
    with tempfile.TemporaryDirectory() as profile:
        # Chromium reads commands on fd 3 and writes replies on fd 4; the shell puts the pipe ends there.
        shell = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        argv = [chromium_path(), *OFFLINE_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        proc = subprocess.Popen(
            ["bash", "-c", shell, *argv],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        tools = _DevTools(proc, to_chrome_w, from_chrome_r, time.monotonic() + timeout)
        try:
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable", session)
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            tools.call("Emulation.setDeviceMetricsOverride", session, **metrics)
            tools.call("Page.navigate", session, url=page.as_uri())
            tools.wait_for("Page.loadEventFired")
            settle = f"new Promise(r => setTimeout(r, {int(settle_ms)}))"
            tools.evaluate(session, settle)
            script_result = None
            if script is not None:  # e.g. interact with the page, then read what it shows
                script_result = tools.evaluate(session, script)
                tools.evaluate(session, settle)
            dom = tools.evaluate(session, "document.documentElement.outerHTML")
            png = None
            if screenshot:
                png = base64.b64decode(tools.call("Page.captureScreenshot", session, format="png")["data"])
            try:
                tools.call("Browser.close")
            except RuntimeError:  # the pipe closes as the browser exits
                pass
        finally:
            os.close(to_chrome_w)
            os.close(from_chrome_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return Rendered(dom, _errors(tools.events), png, script_result)


def render_dom(html: str | Path, timeout: int = 120) -> Rendered:
    """The DOM after the page's scripts ran, and every error it logged."""
    return render(html, timeout=timeout)


def screenshot(
    html: str | Path, png: str | Path, width: int = 1400, height: int = 1600, timeout: int = 120
) -> Path:
    """Write a PNG of the page as a person would see it (viewport `width` x `height`)."""
    rendered = render(html, screenshot=True, width=width, height=height, timeout=timeout)
    if rendered.png is None:
        raise RuntimeError(f"headless Chromium returned no screenshot of {html}")
    return atomic_write_bytes(Path(png), rendered.png)
