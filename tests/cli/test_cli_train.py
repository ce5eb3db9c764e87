"""`python -m sae_lens_routing train --config run.yaml` end to end, kill-and-resume, and under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import cli, free_port, write_config
from sae_lens import SAE

from sae_lens_routing import RouteSAE


def test_train_from_yaml(tmp_path):
    config = write_config(tmp_path)
    res = cli(
        "train",
        "--config",
        str(config),
        "--set",
        "sae.k=8",
        "--summary-json",
        str(tmp_path / "s.json"),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "RouteSAE saved to" in res.stdout and "routing share per layer" in res.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["training_tokens"] == 2048 and summary["l0"] <= 8
    sae = SAE.load_from_disk(tmp_path / "out")
    assert isinstance(sae, RouteSAE) and sae.cfg.k == 8
    assert sae.cfg.hook_names == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_post",
    ]
    assert sae.cfg.d_in == 32  # filled from the model's d_model


def test_bad_yaml_fails_clearly(tmp_path):
    config = write_config(tmp_path, not_a_field=1)
    res = cli("train", "--config", str(config), timeout=120)
    assert res.returncode != 0 and "unknown config fields ['not_a_field']" in res.stderr
    res = cli("train", "--config", str(config), "--set", "oops", timeout=120)
    assert res.returncode != 0 and "--set expects key=value" in res.stderr


@pytest.mark.slow  # three CLI processes, one killed mid-run (~20 s)
def test_kill_and_resume(tmp_path):
    config = write_config(
        tmp_path, training_tokens=128 * 400, n_checkpoints=4, checkpoint_path=str(tmp_path / "ckpt")
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_lens_routing", "train", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    ckpt = None
    while time.time() < deadline and ckpt is None:
        done = [
            p for p in (tmp_path / "ckpt").glob("*/*") if not p.name.startswith(".")
        ]  # renamed when complete
        ckpt = done[0] if done else None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "no checkpoint was written"
    assert not (tmp_path / "out").exists()  # killed before the end
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    res = cli("train", "--config", str(config), "--set", f"resume_from_checkpoint={ckpt}", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary_tokens = int(res.stdout.split("training tokens")[1].split()[0])
    assert summary_tokens == 128 * 400 and state["n_training_samples"] > 0
    assert isinstance(SAE.load_from_disk(tmp_path / "out"), RouteSAE)


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    config = write_config(
        tmp_path, training_tokens=256 * 8, train_batch_size_tokens=256, n_batches_in_buffer=16
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "sae_lens_routing",
            "train",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("RouteSAE saved to") == 1  # rank 0 alone reports
    assert "training tokens    2048" in res.stdout  # the global budget, split over the ranks
    assert isinstance(SAE.load_from_disk(tmp_path / "out"), RouteSAE)
