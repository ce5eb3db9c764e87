"""compile_llm for RouteSAE runs: a hook-free compiled forward whose activations equal run_with_cache's."""

from __future__ import annotations

import pytest
import torch
from helpers import route_runner_cfg, tiny_model, token_dataset

from sae_lens_routing.training.compiled_forward import (
    resid_post_forward,
    resid_post_layers,
    supports_compiled_forward,
)
from sae_lens_routing.training.runner import RouteSAETrainingRunner
from sae_lens_routing.training.store import MultiLayerActivationsStore

HOOKS = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]


def reference(model, tokens, hooks):
    _, cache = model.run_with_cache(tokens, names_filter=hooks)
    return torch.stack([cache[h] for h in hooks], dim=-2)


def test_hook_free_forward_equals_run_with_cache():
    model = tiny_model()
    tokens = torch.randint(1, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    got = resid_post_forward(model, HOOKS)(tokens)
    torch.testing.assert_close(got, reference(model, tokens, HOOKS), atol=1e-6, rtol=1e-6)
    assert resid_post_layers(HOOKS) == [0, 2]
    assert resid_post_layers(["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]) is None
    assert not supports_compiled_forward(model, HOOKS, {"attention_mask": None})
    with pytest.raises(ValueError, match="blocks.N.hook_resid_post"):
        resid_post_forward(model, ["blocks.1.hook_mlp_out", "blocks.2.hook_resid_post"])


@pytest.mark.slow
def test_compile_llm_run_uses_the_compiled_forward(tmp_path):
    model = tiny_model()
    cfg = route_runner_cfg(tmp_path, hook_names=HOOKS, compile_llm=True, training_tokens=128 * 4)
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=model)
    store = runner.activations_store
    assert isinstance(store, MultiLayerActivationsStore) and store.compiled_forward is not None
    assert "run_with_cache" not in vars(model), "SAELens's compiled run_with_cache should not be installed"
    tokens = store.get_batch_tokens()
    got = store.get_multi_layer_activations(tokens)
    torch.testing.assert_close(got, reference(model, tokens, HOOKS), atol=1e-5, rtol=1e-5)
    runner.run()
    assert runner.trainer.n_training_steps == 4
    assert 0 <= runner.final_metrics["reconstruction_quality/normalized_mse"] < 1.5


def test_other_hooks_keep_saelens_compile_path(tmp_path):
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    cfg = route_runner_cfg(tmp_path, hook_names=hooks, compile_llm=True)
    model = tiny_model()
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=model)
    assert runner.activations_store.compiled_forward is None
    assert "run_with_cache" in vars(model)  # SAELens's compile_llm: compiled run_with_cache on the instance


def test_hook_free_forward_on_a_llama(tmp_path):
    """Rotary attention, RMSNorm and grouped KV heads: still exactly the hooks' values."""
    from helpers import tiny_hf_llama_folder

    from sae_lens_routing.offline.local_model import load_local_model

    model = load_local_model(tiny_hf_llama_folder(tmp_path / "llama"))
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    tokens = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(resid_post_forward(model, hooks)(tokens), reference(model, tokens, hooks))
