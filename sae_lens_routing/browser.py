"""Headless Chromium, offline: render a dashboard to a DOM dump or a PNG screenshot, and collect JS errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


def _run(html: Path, extra: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium_path(),
            *OFFLINE_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            *extra,
            html.resolve().as_uri(),
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def render_dom(html: str | Path, timeout: int = 120) -> Rendered:
    """The DOM after the page's scripts ran, and every console error / uncaught exception it logged."""
    proc = _run(Path(html), ["--dump-dom"], timeout)
    errors = [
        line
        for line in proc.stderr.splitlines()
        if re.search(r"CONSOLE.*(Uncaught|Error)|:ERROR:CONSOLE", line)
    ]
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return Rendered(proc.stdout, errors)


def screenshot(
    html: str | Path, png: str | Path, width: int = 1400, height: int = 1600, timeout: int = 120
) -> Path:
    png = Path(png).resolve()
    proc = _run(
        Path(html), [f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars"], timeout
    )
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium screenshot failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return png
