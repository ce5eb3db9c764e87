"""MultiLayerActivationsStore: rows equal run_with_cache activations, no wasted layers, BOS excluded."""

from __future__ import annotations

import pytest
import torch
from helpers import route_runner_cfg, tiny_model, token_dataset

from sae_lens_routing.training.store import MultiLayerActivationsStore

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


def make_store(tmp_path, model=None, dataset=None, **kw):
    model = model or tiny_model()
    cfg = route_runner_cfg(tmp_path, hook_names=HOOKS, **kw)
    return MultiLayerActivationsStore.from_route_config(
        model, cfg, override_dataset=dataset or token_dataset(8)
    ), model


def test_rows_equal_run_with_cache(tmp_path):
    dataset = token_dataset(8)
    # one LLM batch (8 prompts x 15 non-BOS tokens = 120 rows) fills the 112-token buffer; half is kept
    store, model = make_store(
        tmp_path,
        dataset=dataset,
        store_batch_size_prompts=8,
        train_batch_size_tokens=56,
        n_batches_in_buffer=7,
    )
    batch = next(store)
    assert batch.shape == (56, 3, 16) and batch.dtype == torch.float32
    assert dataset.format["type"] is None, "the store changed the caller's dataset format"
    tokens = torch.tensor(dataset["tokens"][:])
    _, cache = model.run_with_cache(tokens, names_filter=HOOKS)
    expected = torch.stack([cache[h] for h in HOOKS], dim=-2)[:, 1:].reshape(-1, 3, 16)  # BOS excluded
    # same rows, shuffled order: match each store row to its reference row
    dist = torch.cdist(batch.reshape(len(batch), -1), expected.reshape(len(expected), -1))
    match = dist.argmin(dim=1)
    torch.testing.assert_close(batch, expected[match], atol=1e-5, rtol=1e-5)
    assert len(set(match.tolist())) == len(batch)  # distinct tokens, none twice
    assert not torch.equal(match, match.sort().values)  # and shuffled


def test_forward_stops_after_last_routed_block(tmp_path):
    model = tiny_model(n_layers=4)
    calls = {i: 0 for i in range(4)}
    for i in range(4):
        model.blocks[i].hook_resid_post.add_hook(
            lambda act, hook, i=i: calls.__setitem__(i, calls[i] + 1), is_permanent=True
        )
    store, _ = make_store(tmp_path, model=model, n_batches_in_buffer=8)
    assert store.stop_at_layer == 3
    next(store)
    assert calls[0] > 0 and calls[2] == calls[0]
    assert calls[3] == 0, "block 3 ran although the last routed block is 2"


def test_dtype_and_finiteness(tmp_path):
    store, model = make_store(tmp_path, dtype="bfloat16", n_batches_in_buffer=8)
    assert next(store).dtype == torch.bfloat16
    model.blocks[1].hook_resid_post.add_hook(lambda act, hook: act * float("nan"), is_permanent=True)
    store, _ = make_store(tmp_path, model=model, n_batches_in_buffer=8)
    with pytest.raises(ValueError, match="NaN or Inf"):
        next(store)


def test_requires_a_dataset(tmp_path):
    with pytest.raises(ValueError, match="dataset_path"):
        MultiLayerActivationsStore.from_route_config(
            tiny_model(), route_runner_cfg(tmp_path, hook_names=HOOKS)
        )


def test_streaming_dataset(tmp_path):
    streaming = token_dataset(16).to_iterable_dataset()
    store, _ = make_store(tmp_path, dataset=streaming, n_batches_in_buffer=8)
    assert next(store).shape == (128, 3, 16)
