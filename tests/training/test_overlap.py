"""Overlapped training: the model forward for the next batch runs in a producer thread (and, on CUDA, on its
own stream) while the SAE trains, with exactly the sequential run's result."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import route_runner_cfg, tiny_model, token_dataset

from sae_lens_routing.training.runner import RouteSAETrainingRunner
from sae_lens_routing.training.trainer import OverlappedBatches, training_batches


def _train(tmp_path, name, **overrides):
    cfg = route_runner_cfg(tmp_path, training_tokens=128 * 12, output_path=str(tmp_path / name), **overrides)
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=tiny_model())
    providers = []
    build = runner.build_trainer

    def recording_build(data_provider):
        providers.append(data_provider)
        return build(data_provider)

    runner.build_trainer = recording_build
    return runner.run(), providers[0]


def test_overlapped_run_equals_sequential(tmp_path):
    sequential, seq_provider = _train(tmp_path, "seq")
    overlapped, ovl_provider = _train(tmp_path, "ovl", prefetch_llm_batches=2)
    assert not isinstance(seq_provider, OverlappedBatches)
    assert isinstance(ovl_provider, OverlappedBatches)
    a, b = sequential.state_dict(), overlapped.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_data_order_does_not_depend_on_the_sae_init(tmp_path):
    """The mixing buffer's shuffles are reseeded with cfg.seed when training starts: drawing the SAE's init
    (more numbers for a wider SAE) must not change which batches the trainer sees."""
    orders = []
    for n_init_draws in (10, 10_000):
        runner = RouteSAETrainingRunner(
            route_runner_cfg(tmp_path), override_dataset=token_dataset(64), override_model=tiny_model()
        )
        torch.randn(n_init_draws)  # stands in for a different SAE initialisation
        batches = training_batches(runner.activations_store, runner.cfg)
        orders.append(torch.cat([next(batches) for _ in range(3)]))
    assert torch.equal(orders[0], orders[1])


def test_overlapped_batches_come_from_the_producer_thread_in_order():
    source = iter([torch.full((2, 3), float(i)) for i in range(5)])
    seen: list[str] = []

    def recording():
        for batch in source:
            seen.append(threading.current_thread().name)
            yield batch

    batches = OverlappedBatches(recording(), "cpu", prefetch=2)
    try:
        got = [float(b[0, 0]) for b in batches]
    finally:
        batches.close()
    assert got == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert threading.main_thread().name not in seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_arrive_on_the_device_from_pinned_host_memory():
    host = [torch.randn(64, 2, 16) for _ in range(3)]
    batches = OverlappedBatches(iter(host), "cuda", prefetch=1)
    try:
        got = [b for b in batches]
    finally:
        batches.close()
    assert all(b.is_cuda for b in got)
    for expected, batch in zip(host, got):
        torch.testing.assert_close(batch.cpu(), expected, rtol=0, atol=0)
