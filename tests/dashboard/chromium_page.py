"""Test harness: load a page in headless Chromium (`--dump-dom`), run a script in it, collect its errors.

A probe injected first in the page records uncaught errors, rejections, `console.error`/`console.assert` and
failed resource loads (networking goes to a dead proxy), then writes them and the script's value into the DOM.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBE = """<script id="probe">(function () {
  const errors = [], note = (...a) => errors.push(a.map(String).join(' '));
  const error = console.error;
  console.error = (...a) => { note(...a); error(...a); };
  console.assert = (ok, ...a) => { if (!ok) { note('Assertion failed', ...a); } };
  addEventListener('error', e => note(e.error ? (e.error.stack || e.error) : e.message ||
    'failed to load ' + (e.target.src || e.target.href)), true);
  addEventListener('unhandledrejection', e => note('unhandled rejection', e.reason));
  addEventListener('load', () => setTimeout(async () => {
    let result = null;
    try { result = await (SCRIPT); } catch (e) { note(e.stack || e); }
    await new Promise(r => setTimeout(r, 300));
    const out = document.body.appendChild(document.createElement('pre'));
    out.id = 'probe-out';
    out.textContent = JSON.stringify({errors, result});
  }, 500));
})();</script>"""


@dataclass
class Rendered:
    dom: str
    console_errors: list[str]
    script_result: Any = None


def ensure_chromium() -> None:
    """Installs Debian's chromium when it is missing (CI machines start without it)."""
    if shutil.which("chromium"):
        return
    cmd = "apt-get install -y chromium || (apt-get update && apt-get install -y chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["bash", "-c", cmd], check=True, capture_output=True, timeout=900, env=env)


def render(page: Path, script: str = "null", width: int = 1400, height: int = 1600) -> Rendered:
    """The DOM after `script` (an expression, awaited) ran in the loaded page; its value; the errors."""
    ensure_chromium()
    text = Path(page).read_text(encoding="utf-8")
    probe = PROBE.replace("SCRIPT", script)
    with tempfile.TemporaryDirectory() as scratch:
        probed = Path(page).parent / f".probed-{Path(scratch).name}.html"  # same folder: same relative URLs
        probed.write_text(text.replace("<head>", "<head>" + probe, 1) if "<head>" in text else probe + text)
        try:
            done = subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 f"--user-data-dir={scratch}",
                 f"--window-size={width},{height}", "--virtual-time-budget=30000", "--dump-dom",
                 probed.resolve().as_uri()],
                capture_output=True, text=True, timeout=180, check=True,
            )  # fmt: skip
        finally:
            probed.unlink()
    out = re.search(r'<pre id="probe-out">(.*?)</pre>', done.stdout, re.S)
    assert out, f"the probe did not finish: {done.stdout[-2000:]}"
    found = json.loads(html_lib.unescape(out.group(1)))
    probe_parts = r'<script id="probe">.*?</script>|<pre id="probe-out">.*?</pre>'
    dom = re.sub(probe_parts, "", done.stdout, flags=re.S)
    return Rendered(dom, found["errors"], found["result"])
