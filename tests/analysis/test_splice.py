"""Routed splicing on a tiny model: exact with the error term, only routed positions change, generation."""

from __future__ import annotations

import pytest
import torch
from helpers import SPLICE_HOOKS as HOOKS
from helpers import exact_sae, make_sae, tiny_model

from sae_lens_routing import RouteSAE, RouteSAEConfig
from sae_lens_routing.analysis.splice import feature_steering, routed_generate, routed_splice, steer


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def tokens(n=3, s=10):
    return torch.randint(1, 50, (n, s), generator=torch.Generator().manual_seed(0))


def test_error_term_keeps_logits(model):
    sae = make_sae()
    clean = model(tokens())
    with routed_splice(model, sae, use_error_term=True) as plans:
        spliced = model(tokens())
    torch.testing.assert_close(spliced, clean, atol=1e-4, rtol=1e-4)
    assert len(plans) == 1 and plans[0].feature_acts.shape == (3, 10, 48)
    assert set(plans[0].layer_index.unique().tolist()) == {0, 1, 2}  # the test exercises every layer


def test_only_routed_positions_are_replaced(model):
    sae = make_sae()
    toks = tokens()
    _, clean = model.run_with_cache(toks, names_filter=HOOKS)
    with routed_splice(model, sae) as plans:
        captured = {}
        hooks = [(h, lambda act, hook: captured.__setitem__(hook.name, act.clone())) for h in HOOKS]
        with model.hooks(fwd_hooks=hooks):
            model(toks)
    plan = plans[0]
    first = plan.layer_index == 0
    # layer 0 (the earliest routed layer) sees no upstream change: only its routed tokens differ, and they
    # hold exactly the reconstruction
    changed = (captured[HOOKS[0]] - clean[HOOKS[0]]).abs().amax(-1) > 1e-6
    assert torch.equal(changed, first)
    torch.testing.assert_close(captured[HOOKS[0]][first], plan.values[first])
    # every routed position holds its planned value
    for i, h in enumerate(HOOKS):
        mask = plan.layer_index == i
        torch.testing.assert_close(captured[h][mask], plan.values[mask])
    # a token routed to the last layer is untouched at the earlier routed layers unless an earlier token
    # changed (attention); the first position attends only to itself:
    pos0_layer = plan.layer_index[:, 0]
    for b in range(3):
        for i, h in enumerate(HOOKS):
            if i < pos0_layer[b]:
                torch.testing.assert_close(captured[h][b, 0], clean[h][b, 0])


def test_exact_sae_splice_is_identity(model):
    clean = model(tokens())
    with routed_splice(model, exact_sae()):
        spliced = model(tokens())
    torch.testing.assert_close(spliced, clean, atol=1e-4, rtol=1e-4)


def test_soft_routing_and_bad_hooks_rejected(model):
    with pytest.raises(ValueError, match="routing='hard'"):
        with routed_splice(model, make_sae("soft")):
            pass
    sae = RouteSAE(
        RouteSAEConfig(
            d_in=16, d_sae=48, k=6, hook_names=["blocks.1.hook_resid_post", "blocks.7.hook_resid_post"]
        )
    )
    with pytest.raises(ValueError, match="not hook points"):
        with routed_splice(model, sae):
            pass
    with pytest.raises(ValueError, match=r"sae is on meta but the model is on cpu.*sae.to\('cpu'\)"):
        with routed_splice(model, make_sae().to("meta")):
            pass


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory):
    """A tiny Llama with a tokenizer (HookedTransformer.generate needs one)."""
    from helpers import tiny_hf_llama_folder

    from sae_lens_routing.offline.local_model import load_local_model

    return load_local_model(tiny_hf_llama_folder(tmp_path_factory.mktemp("llama") / "m"))


def tok_sae(seed: int = 0) -> RouteSAE:
    torch.manual_seed(seed)
    sae = RouteSAE(RouteSAEConfig(d_in=32, d_sae=64, k=8, hook_names=HOOKS))
    with torch.no_grad():
        sae.W_router.mul_(20)
    return sae


def test_generation_is_spliced_and_kv_cache_refused(tok_model):
    model, sae = tok_model, tok_sae()
    prompt = torch.tensor([[0, 5, 9, 3]])
    with routed_splice(model, sae) as plans:
        out = model.generate(
            prompt, max_new_tokens=3, use_past_kv_cache=False, do_sample=False, verbose=False
        )
    assert out.shape == (1, 7)
    assert [p.layer_index.shape[1] for p in plans] == [4, 5, 6]  # every generated token was routed
    with pytest.raises(ValueError, match="KV-cached"):
        with routed_splice(model, sae):
            model.generate(prompt, max_new_tokens=3, use_past_kv_cache=True, do_sample=False, verbose=False)


def test_steering_changes_generated_tokens_logits(model):
    sae = make_sae()
    prompt = torch.tensor([[1, 5, 9, 3]])
    _, base = routed_generate(model, sae, prompt, max_new_tokens=4, splice=False)
    _, kept = routed_generate(model, sae, prompt, max_new_tokens=4)  # error term kept: the clean model
    for a, b in zip(base, kept, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    edit = feature_steering({3: 40.0, 7: 40.0}, "add", d_sae=48)
    toks, steered = routed_generate(model, sae, prompt, max_new_tokens=4, on_features=edit)
    # logits of positions whose inputs are generated tokens differ, not just the prompt's last position
    assert all((s - b).abs().max() > 1e-3 for s, b in zip(steered[1:], base[1:], strict=True))
    # multiplying by 1 is a no-op
    _, same = routed_generate(
        model, sae, prompt, max_new_tokens=2, on_features=feature_steering({3: 1.0}, "multiply")
    )
    torch.testing.assert_close(same[1], base[1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="feature indices"):
        feature_steering({99: 1.0}, d_sae=48)


def test_steer_returns_both_continuations(tok_model):
    result = steer(tok_model, tok_sae(), "the object is", {1: 50.0, 2: 50.0}, max_new_tokens=3)
    assert isinstance(result.steered, str) and isinstance(result.unsteered, str)
    assert len(result.steered_logits) == 3
    pairs = zip(result.steered_logits, result.unsteered_logits, strict=True)
    assert any((a - b).abs().max() > 1e-3 for a, b in pairs)


def test_positions_leave_unselected_tokens_clean():
    """`positions` splices only the chosen tokens (run_route_evals keeps special tokens clean, as SAELens)."""
    model, sae = tiny_model(), make_sae()
    t = torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[:, :3] = False
    clean = model(t)
    with routed_splice(model, sae, positions=keep):
        partial = model(t)
    with routed_splice(model, sae):
        full = model(t)
    # causal model: positions before the first spliced one are untouched, later ones change
    torch.testing.assert_close(partial[:, :3], clean[:, :3])
    assert not torch.allclose(partial[:, 3:], clean[:, 3:], atol=1e-4)
    assert not torch.allclose(full[:, :3], clean[:, :3], atol=1e-4)
    with pytest.raises(ValueError, match="positions has shape"):
        with routed_splice(model, sae, positions=keep[:, :5]):
            model(t)
    with pytest.raises(ValueError, match="bool tensor"):
        with routed_splice(model, sae, positions=keep.long()):
            model(t)


def test_multiplying_a_feature_that_never_fires_is_refused(tok_model):
    """x * 0 = 0: multiplying a latent off on every token would return the unsteered text as 'steered'."""
    sae = tok_sae()
    with torch.no_grad():
        sae.b_enc[5] = -1e4  # latent 5 never in any token's top k
    with pytest.raises(ValueError, match=r"feature\(s\) \[5\] never fired on the prompt 'the object is'"):
        steer(tok_model, sae, "the object is", {5: 10.0}, mode="multiply", max_new_tokens=2)
    assert steer(tok_model, sae, "the object is", {5: 10.0}, mode="add", max_new_tokens=2).steered  # add: ok
