"""RouteSAETrainer on 2 gloo ranks equals 1 rank with the whole batch (gradient averaging is right)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port, make_training_sae
from sae_lens.config import SAETrainerConfig

from sae_lens_routing.training.trainer import RouteSAETrainer

STEPS, GLOBAL_BATCH = 6, 64


def global_batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(GLOBAL_BATCH, 4, 16, generator=gen) * 3 for _ in range(STEPS)]


def train(rank: int, world_size: int, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # different init per rank: rank 0's must be broadcast
    sae = make_training_sae(aux_loss_coefficient=1.0)
    if seed != 0:
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(torch.randn_like(p) * 0.1 * seed)
    local = GLOBAL_BATCH // world_size
    batches = [b[rank * local : (rank + 1) * local] for b in global_batches()]
    cfg = SAETrainerConfig(
        total_training_samples=STEPS * local,
        train_batch_size_samples=local,
        lr=1e-2,
        lr_end=1e-2,
        dead_feature_window=2,  # latents go "dead" quickly, so the aux loss and its bookkeeping matter
    )
    trainer = RouteSAETrainer(cfg=cfg, sae=sae, data_provider=iter(batches))
    trainer.fit()
    state = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    state["_dead"] = trainer.dead_neurons.clone()
    state["_freq"] = trainer.feature_sparsity.clone()
    return state


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(train(rank, world_size, seed=rank), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_rank(tmp_path):
    single = train(0, 1, seed=0)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for key in single:
        assert torch.equal(r0[key], r1[key]), f"{key} differs across ranks"
        torch.testing.assert_close(r0[key].float(), single[key].float(), atol=1e-5, rtol=1e-4, msg=key)
