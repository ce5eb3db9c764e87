"""A real local judge server (tests/interpret/judge_server.py in its own process) and synthetic contexts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sae_lens_routing.interpret.contexts import InterpretContexts

SERVER = Path(__file__).parent / "judge_server.py"
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


@dataclass
class Server:
    url: str
    log: Path
    proc: subprocess.Popen

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def judge_server(tmp_path):
    procs = []

    def start(actions=(), delay=0.0, model=None, wait_s=30.0) -> Server:
        folder = tmp_path / f"server{len(procs)}"
        folder.mkdir()
        script = folder / "script.json"
        script.write_text(json.dumps({"actions": list(actions), "delay": delay, "model": model}))
        port_file, log = folder / "port", folder / "requests.jsonl"
        proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(port_file), str(log), str(script)],
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "stderr.txt", "w"),
        )
        procs.append(proc)
        deadline = time.time() + wait_s
        while not port_file.exists():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"judge server did not start: {(folder / 'stderr.txt').read_text()}")
            time.sleep(0.05)
        return Server(f"http://127.0.0.1:{port_file.read_text()}/v1", log, proc)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def synthetic_contexts(n_features: int = 4, n_heldout_each: int = 4) -> InterpretContexts:
    """Counted features with paper contexts and detection excerpts whose texts are all distinct."""
    features, shares, detection = {}, {}, {}
    for f in range(n_features):
        features[f] = [
            {
                "token": f"tok{f}",
                "activation": 20.0 - i,
                "layer": HOOKS[f % 3],
                "context": f"feature {f} ctx {i}",
            }
            for i in range(5)
        ]
        shares[f] = [1.0 if i == f % 3 else 0.0 for i in range(3)]
        detection[f] = {
            "explain": [{"text": f"top excerpt {f}.{i} <<x>>", "activation": 9.0} for i in range(3)],
            "heldout": [
                {"text": f"held {f}.{i} on", "label": 1, "quantile": i % 2 + 1, "activation": 2.0}
                for i in range(n_heldout_each)
            ]
            + [
                {"text": f"held {f}.{i} off", "label": 0, "quantile": None, "activation": 0.0}
                for i in range(n_heldout_each)
            ],
        }
    return InterpretContexts(HOOKS, features, shares, detection, n_latents_with_contexts=n_features + 3)
