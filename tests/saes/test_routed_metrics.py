"""RoutedMetrics under torchrun: the ranks' sums add up to the metrics of all their tokens together."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port, make_sae

from sae_lens_routing.saes.routed_metrics import RoutedMetrics


def _batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(40, 3, 16, generator=gen) for _ in range(2)]


def _metrics(sae, batches) -> RoutedMetrics:
    metrics = RoutedMetrics(list(sae.cfg.hook_names), sae.cfg.d_sae, sae.cfg.d_in)
    for acts in batches:
        metrics.update(sae.forward_routed(acts))
    return metrics


def _rank(rank: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        metrics = _metrics(make_sae(), [_batches()[rank]])  # each rank sees half of the tokens
        metrics.all_reduce()
        if rank == 0:
            queue.put(metrics.compute())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_sums_the_ranks_state():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_rank, args=(free_port(), queue), nprocs=2, start_method="spawn")
    reduced = queue.get(timeout=60)
    together = _metrics(make_sae(), _batches()).compute()
    assert reduced["metrics/total_tokens_evaluated"] == 80
    for key, value in together.items():
        assert reduced[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_all_reduce_without_a_process_group_changes_nothing():
    metrics = _metrics(make_sae(), _batches())
    before = metrics.compute()
    metrics.all_reduce()
    assert metrics.compute() == before
