"""The end-to-end phase lowers the routed splice's KL (as `run_route_evals` measures it) and trains only the
SAE."""

from __future__ import annotations

import torch
from helpers import make_training_sae, tiny_model

from sae_lens_routing.analysis.evals import run_route_evals
from sae_lens_routing.training.end_to_end import finetune_end_to_end


def setup():
    torch.manual_seed(0)
    model = tiny_model()
    with torch.no_grad():
        model.W_U.mul_(30)  # make the loss sensitive to the stream
    sae = make_training_sae(d_sae=32, k=4)
    tokens = torch.randint(1, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = 0
    return model, sae, tokens


def kl_of(sae, model, tokens):
    evals = run_route_evals(sae, model, tokens, exclude_special_tokens=[0])
    return evals["model_behavior_preservation/kl_div_with_sae"]


def test_finetune_lowers_kl_and_freezes_the_model():
    model, sae, tokens = setup()
    before_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    router_before = sae.W_router.detach().clone()
    kl_before = kl_of(sae, model, tokens)
    history = finetune_end_to_end(sae, model, [tokens] * 30, lr=1e-2, exclude_special_tokens=[0])
    kl_after = kl_of(sae.eval(), model, tokens)
    assert len(history) == 30 and kl_after < 0.7 * kl_before, (kl_before, kl_after)
    assert abs(history[0]["kl"] - kl_before) < 1e-4  # the phase's KL is the evaluation's KL
    assert not torch.equal(sae.W_router, router_before)  # the router learns from the model's KL too
    for name, p in model.named_parameters():
        assert torch.equal(p, before_weights[name]) and p.requires_grad, name


def test_config_run_ends_with_the_phase_when_asked(tmp_path):
    from helpers import route_runner_cfg, token_dataset

    from sae_lens_routing.training.runner import RouteSAETrainingRunner

    model = tiny_model()
    cfg = route_runner_cfg(tmp_path, sae={"end_to_end_tokens": 150})  # 3 batches of 4 x 16 tokens
    runner = RouteSAETrainingRunner(cfg, override_dataset=token_dataset(64), override_model=model)
    runner.run()
    assert len(runner.end_to_end_history) == 3
    assert runner.final_metrics["end_to_end/steps"] == 3
    assert all(p.requires_grad for p in model.parameters())


def test_the_phase_needs_the_live_model(tmp_path):
    import pytest
    from helpers import route_runner_cfg

    from sae_lens_routing.training.validation import validate_route_config

    cfg = route_runner_cfg(tmp_path, sae={"end_to_end_tokens": 10})
    cfg.use_cached_activations = True
    with pytest.raises(ValueError, match="end_to_end_tokens=10 needs the live model"):
        validate_route_config(cfg)
    with pytest.raises(ValueError, match="end_to_end_tokens must be an integer >= 0"):
        route_runner_cfg(tmp_path, sae={"end_to_end_tokens": -1})
