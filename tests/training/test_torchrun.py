"""`torchrun --nproc_per_node 2` on CPU (gloo, loopback): one RouteSAE trained data-parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import free_port
from sae_lens import SAE

from sae_lens_routing import RouteSAE

HERE = Path(__file__).parent


def torchrun_script(*args: str, **extra_env: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", **extra_env}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(HERE / "ddp_train_script.py"),
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path):
    torchrun_script(
        str(tmp_path), DDP_TEST_WANDB="1", WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true"
    )
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    # each rank read its own shard of the dataset
    assert r0["tokens"] and r1["tokens"]
    assert not {tuple(t) for t in r0["tokens"]} & {tuple(t) for t in r1["tokens"]}
    # identical parameters on both ranks after every step
    assert len(r0["param_sums"]) == len(r1["param_sums"]) == 12
    assert r0["param_sums"] == r1["param_sums"]
    # the loss falls
    assert sum(r0["losses"][-3:]) < 0.8 * sum(r0["losses"][:3]), r0["losses"]
    # only rank 0 wrote checkpoints and the final folder
    assert len([p for p in (tmp_path / "ckpt").iterdir()]) == 1
    sae = SAE.load_from_disk(tmp_path / "final")
    assert isinstance(sae, RouteSAE)
    # the run's global tokens and batch are recorded (not rank 0's half), in the folder, checkpoint and card
    (ckpt_dir,) = [p for p in (tmp_path / "ckpt").glob("*/*") if p.is_dir()]
    for runner_cfg in (tmp_path / "final" / "runner_cfg.json", ckpt_dir / "runner_cfg.json"):
        recorded = json.loads(runner_cfg.read_text())
        assert (recorded["training_tokens"], recorded["train_batch_size_tokens"]) == (256 * 12, 256)
    from sae_lens_routing import write_model_card

    card, _ = write_model_card(tmp_path / "final", repo_id="org/repo", sae_id="k4")
    assert "| training tokens | 3,072 |" in card.read_text()
    assert r0["wandb_config"] == {"training_tokens": 3072, "train_batch_size_tokens": 256}
    assert json.loads((tmp_path / "final" / "training_metrics.json").read_text())["training_tokens"] == 3072
    out = sae.forward_routed(torch.randn(4, 2, 16))
    assert out.sae_out.shape == (4, 16)

    # resume both ranks from rank 0's mid-run checkpoint: the step counter continues, ranks stay identical
    (ckpt,) = [p for p in (tmp_path / "ckpt").glob("*/*") if p.is_dir()]
    torchrun_script(str(tmp_path), str(ckpt))
    s0 = json.loads((tmp_path / "rank0_resumed.json").read_text())
    s1 = json.loads((tmp_path / "rank1_resumed.json").read_text())
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)  # our own checkpoint
    per_rank_batch, per_rank_total = 128, 128 * 12
    remaining = (per_rank_total - state["n_training_samples"]) // per_rank_batch
    assert 0 < remaining < 12
    first = state["n_training_steps"]
    assert s0["steps"] == s1["steps"] == list(range(first, first + remaining)), (s0["steps"], state)
    assert s0["param_sums"] == s1["param_sums"]
    assert s0["losses"][0] < r0["losses"][0]  # it continued from trained weights, not from scratch
    assert isinstance(SAE.load_from_disk(tmp_path / "final_resumed"), RouteSAE)
