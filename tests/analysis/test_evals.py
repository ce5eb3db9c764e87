"""run_route_evals on a tiny model: exact SAE recovers all CE, ablation none, KL units, routing chart."""

from __future__ import annotations

import pytest
import torch
from helpers import exact_sae, make_sae, tiny_model

from sae_lens_routing.analysis.evals import run_route_evals, write_routing_chart
from sae_lens_routing.saes.routed_metrics import routing_shares


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
    assert abs(sum(routing_shares(m).values()) - 1) < 1e-9
    shares = torch.tensor(list(routing_shares(m).values()))
    nz = shares[shares > 0]
    assert abs(m["routing/entropy_bits"] - float(-(nz * nz.log2()).sum())) < 1e-6
    # features counted from the same routing, at the width-relative threshold, over the tokens read
    assert m["features/tokens_read"] == 4 * 11
    assert m["features/threshold"] == pytest.approx(15 / 2048**0.5 * 4)
    rule = m["features/threshold_rule"]
    assert rule.startswith("width-aware") and "d_in = 16" in rule
    per_layer = [v for k, v in m.items() if k.startswith("features/n_counted_per_layer/")]
    assert len(per_layer) == len(exact_sae().cfg.hook_names) and sum(per_layer) == m["features/n_counted"]
    png = write_routing_chart(m, tmp_path / "routing.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_sae_and_kl_units():
    model = scaled_model()
    t = toks()
    m = run_route_evals(make_sae(), model, t)  # nothing excluded: the official unit is comparable
    score = m["model_performance_preservation/ce_loss_score"]
    # a random SAE changes the model (on random tokens the sign of the CE change is arbitrary)
    assert abs(score - 1) > 0.01 and m["model_behavior_preservation/kl_div_with_sae"] > 1e-3
    per_token = m["model_behavior_preservation/kl_div_with_sae"]
    official = m["model_behavior_preservation/kl_div_with_sae_official_batchmean"]
    assert abs(official - per_token * t.shape[1]) < 1e-4 * max(
        1.0, official
    )  # batchmean = per-token x seq_len


def independent_activity(sae, model, tokens) -> torch.Tensor:
    """[tokens, d_sae] bool: latent j fires on a token iff it is among the token's k largest pre-activations
    and that pre-activation is > 0 (TopK then ReLU), computed here without the SAE's activation function."""
    hooks = list(sae.cfg.hook_names)
    _, cache = model.run_with_cache(tokens, names_filter=hooks)
    pre = sae.forward_routed(torch.stack([cache[h] for h in hooks], dim=-2)).hidden_pre.flatten(0, -2)
    top = pre.topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre, dtype=torch.bool).scatter(-1, top.indices, top.values > 0)


def test_sparsity_metrics_count_what_fires():
    """L0, silent and dense latents equal an independent count; the encoder bias is shifted so that some
    tokens fire fewer than k latents and some latents never fire (a constant or mis-normalised count would
    differ)."""
    model, t = scaled_model(), toks()
    sae = make_sae()
    with torch.no_grad():
        sae.b_enc.sub_(2.0)  # about the median k-th largest pre-activation of these tokens
    active = independent_activity(sae, model, t)
    m = run_route_evals(sae, model, t)
    l0 = active.sum(-1).double().mean().item()
    silent = int((~active.any(0)).sum())
    assert 1 < l0 < sae.cfg.k and 0 < silent < sae.cfg.d_sae  # the fixture exercises both counts
    assert m["sparsity/l0"] == pytest.approx(l0, abs=1e-9)
    assert m["sparsity/latents_silent_on_eval"] == silent
    assert m["sparsity/dense_latents"] == int((active.float().mean(0) > 0.1).sum())
    # excluding BOS changes the denominator and the tokens counted
    m = run_route_evals(sae, model, t, exclude_special_tokens=[0])
    keep = (t != 0).flatten()
    assert m["sparsity/l0"] == pytest.approx(active[keep].sum(-1).double().mean().item(), abs=1e-9)


def test_excluded_tokens_stay_unspliced_as_in_saelens():
    """With BOS excluded, the SAE splice leaves BOS clean (SAELens's get_recons_loss does the same), so the KL
    equals that of a splice restricted to the kept positions, not that of splicing everything."""
    from sae_lens_routing.analysis.evals import kl_per_token
    from sae_lens_routing.analysis.splice import routed_splice

    model, sae, t = scaled_model(), make_sae(), toks()
    m = run_route_evals(sae, model, t, exclude_special_tokens=[0])
    keep = t != 0
    clean = model(t)
    with routed_splice(model, sae, positions=keep):
        kept_only = kl_per_token(clean, model(t))[keep].mean().item()
    with routed_splice(model, sae):
        everything = kl_per_token(clean, model(t))[keep].mean().item()
    assert m["model_behavior_preservation/kl_div_with_sae"] == pytest.approx(kept_only, rel=1e-5)
    assert abs(everything - kept_only) > 1e-4  # the two semantics differ on this model


def test_one_routing_per_batch_gives_the_metrics_of_the_five_pass_code():
    """Metrics equal (1e-6) to those the pre-route-once code wrote (tests/fixtures/evals_before_route_once,
    made by its make_fixture.py at commit 0597e4d, when every batch ran a clean pass plus two splices that
    each re-ran the model and re-routed). The routed hooks start at block 1: the splices start mid-model."""
    import json

    from helpers import FIXTURES
    from safetensors.torch import load_file

    from sae_lens_routing import RouteSAE, RouteSAEConfig
    from sae_lens_routing.saes.routed_metrics import SHARE_PREFIX

    folder = FIXTURES / "evals_before_route_once"
    state = load_file(folder / "sae_and_tokens.safetensors")
    tokens = state.pop("tokens")
    hooks = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post", "blocks.3.hook_resid_post"]
    sae = RouteSAE(RouteSAEConfig(d_in=16, d_sae=48, k=6, hook_names=hooks))
    sae.load_state_dict(state)
    model = tiny_model(n_layers=5)
    with torch.no_grad():
        model.W_U.mul_(5)
    before = json.loads((folder / "metrics.json").read_text())
    after = {
        "excluding_bos": run_route_evals(sae, model, tokens, batch_size=4, exclude_special_tokens=[0]),
        "all_tokens": run_route_evals(sae, model, tokens, batch_size=3),
    }
    for case, old in before.items():
        old = dict(old)
        old.update({SHARE_PREFIX + h: s for h, s in old.pop("routing/share").items()})
        assert {k for k in after[case] if not k.startswith("features/")} == set(old), case
        for key, value in old.items():
            assert after[case][key] == pytest.approx(value, rel=1e-6, abs=1e-6), (case, key)


def test_model_without_the_routed_hooks_is_refused_clearly():
    """Issue row: a model lacking the SAE's hooks gave a bare KeyError; now the splice's clear message."""
    sae = make_sae()  # hooks at blocks 0..2
    message = r"sae.cfg.hook_names \['blocks.2.hook_resid_post'\] are not hook points"
    with pytest.raises(ValueError, match=message):
        run_route_evals(sae, tiny_model(n_layers=2), toks())
