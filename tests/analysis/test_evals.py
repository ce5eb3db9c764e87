"""run_route_evals on a tiny model: exact SAE recovers all CE, ablation none, KL units, routing chart."""

from __future__ import annotations

import torch
from helpers import exact_sae, make_sae, tiny_model

from sae_lens_routing.analysis.evals import run_route_evals, write_routing_chart


def scaled_model():
    model = tiny_model()
    with torch.no_grad():
        model.W_U.mul_(30)  # a random tiny model is nearly uniform; make the loss sensitive to the stream
    return model


def toks():
    t = torch.randint(1, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    t[:, 0] = 0  # BOS
    return t


def test_exact_sae_recovers_everything(tmp_path):
    model = scaled_model()
    m = run_route_evals(exact_sae(), model, toks(), exclude_special_tokens=[0])
    assert abs(m["model_performance_preservation/ce_loss_score"] - 1.0) < 1e-3
    assert m["model_behavior_preservation/kl_div_with_sae"] < 1e-5
    assert m["reconstruction_quality/explained_variance"] > 0.9999
    assert m["reconstruction_quality/normalized_mse"] < 1e-8
    ce = m["model_performance_preservation/ce_loss_without_sae"]
    assert m["model_performance_preservation/ce_loss_with_ablation"] > ce + 0.1  # zero-ablation hurts
    assert m["metrics/total_tokens_evaluated"] == 4 * 11  # BOS excluded
    assert abs(sum(m["routing/share"].values()) - 1) < 1e-9
    shares = torch.tensor(list(m["routing/share"].values()))
    nz = shares[shares > 0]
    assert abs(m["routing/entropy_bits"] - float(-(nz * nz.log2()).sum())) < 1e-6
    png = write_routing_chart(m, tmp_path / "routing.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_sae_and_kl_units():
    model = scaled_model()
    t = toks()
    m = run_route_evals(make_sae(), model, t)  # nothing excluded: the official unit is comparable
    score = m["model_performance_preservation/ce_loss_score"]
    # a random SAE changes the model (on random tokens the sign of the CE change is arbitrary)
    assert abs(score - 1) > 0.01 and m["model_behavior_preservation/kl_div_with_sae"] > 1e-3
    assert m["sparsity/l0"] <= 6 and 0 <= m["sparsity/latents_silent_on_eval"] <= 48
    per_token = m["model_behavior_preservation/kl_div_with_sae"]
    official = m["model_behavior_preservation/kl_div_with_sae_official_batchmean"]
    assert abs(official - per_token * t.shape[1]) < 1e-4 * max(
        1.0, official
    )  # batchmean = per-token x seq_len
