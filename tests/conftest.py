"""Shared fixtures. Helpers (plain functions) are in `helpers.py`, importable as `helpers` from any test
(pyproject's pytest `pythonpath`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import make_training_sae

import sae_lens_routing  # noqa: F401  (registers the architecture)
from sae_lens_routing import RouteTrainingSAE


@pytest.fixture
def training_sae() -> RouteTrainingSAE:
    return make_training_sae()


SERVER = Path(__file__).parent / "interpret" / "judge_server.py"  # a real local judge, its own process


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
