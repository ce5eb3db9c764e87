"""Feature contexts and counting follow the paper's rules on a hand-made case with a known answer."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_hf_llama_folder

from sae_lens_routing import RouteSAE, RouteSAEConfig
from sae_lens_routing.analysis.feature_contexts import (
    Activation,
    ContextRules,
    collect_feature_contexts,
    contexts_from_activations,
    count_features,
    feature_metrics,
    relative_threshold,
    sentence_context,
    write_feature_contexts,
)

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_sentence_context_is_bounded_and_marked():
    toks = ["The", " cat", " sat", ".", " A", " dog", " ran", " far", ".", " End"]
    assert sentence_context(toks, 5, 64) == "A<< dog>> ran far."
    assert sentence_context(toks, 1, 64) == "The<< cat>> sat."
    assert sentence_context(toks, 6, 3) == "A dog<< ran>>"  # clipped to 3 tokens, preceding context first


def test_counting_rules_known_answer(tmp_path):
    # 40 sequences, each with 12 distinct token types
    strings = [[f" w{s}_{p}" for p in range(11)] + ["."] for s in range(40)]
    for s in range(40):
        strings[s][3] = " Apple" if s % 2 else "apple"  # one token type for the official rules
        strings[s][4] = " pear"
    acts = []
    # latent 0: 'apple'/' Apple' in 10 sequences (one type: keeps 2) + 'pear' in 10 (keeps 2)
    # + 1 unique token -> 5 contexts: feature
    acts += [Activation(s, 3, 0, 20.0 + s, 1) for s in range(10)]
    acts += [Activation(s, 4, 0, 16.0 + s, 0) for s in range(10)]
    acts += [Activation(0, 7, 0, 30.0, 1)]
    # latent 1: only 4 contexts: 'apple' x2, 'pear' x2 -> not a feature (needs > 4)
    acts += [Activation(s, 3, 1, 25.0, 0) for s in range(5)] + [
        Activation(s, 4, 1, 25.0, 0) for s in range(5)
    ]
    # latent 2: 40 distinct tokens above threshold -> 40 contexts but 40 token types > 32: not a feature
    acts += [Activation(s, 5, 2, 18.0, 1) for s in range(40)]
    # latent 3: 33 distinct... no: 32 distinct tokens -> feature (<= 32 types)
    acts += [Activation(s, 6, 3, 18.0, 0) for s in range(32)]
    # latent 4: all below threshold (15) -> no contexts at all
    acts += [Activation(s, 2, 4, 15.0, 0) for s in range(40)]
    rules = ContextRules(threshold=15.0)  # the paper's absolute rule
    results = contexts_from_activations(strings, acts, HOOKS, rules)
    assert sorted(results) == [0, 1, 2, 3]
    assert len(results[0].contexts) == 5 and results[0].is_feature(rules)
    top_apple = [c for c in results[0].contexts if c["token"] == "apple"]
    assert [c["activation"] for c in top_apple] == [29.0, 28.0]  # the 2 strongest kept
    assert top_apple[0]["layer"] == HOOKS[1] and "<< Apple>>" in top_apple[0]["context"]
    assert "<<apple>>" in top_apple[1]["context"]
    assert len(results[1].contexts) == 4 and not results[1].is_feature(rules)
    assert len(results[2].token_types) == 40 and not results[2].is_feature(rules)
    assert len(results[3].token_types) == 32 and results[3].is_feature(rules)
    assert count_features(results, rules) == 2
    # every threshold is a parameter
    assert count_features(results, ContextRules(15.0, min_contexts=4)) == 3
    assert count_features(results, ContextRules(15.0, max_token_types=40)) == 3
    # per routed layer: the layer most of a feature's kept contexts come from (latent 0: 3 of 5 on layer 1)
    m = feature_metrics(results, rules, tokens_read=480, hook_names=HOOKS)
    written = write_feature_contexts(results, tmp_path / "fc.json", rules, tokens_read=480, hook_names=HOOKS)
    assert json.loads((tmp_path / "fc.json").read_text()) == written and written["n_counted"] == 2
    assert results[0].layer == HOOKS[1] and results[3].layer == HOOKS[0]
    assert m["features/n_counted"] == 2 and m["features/threshold"] == 15.0
    assert m["features/tokens_read"] == 480
    assert [m[f"features/n_counted_per_layer/{h}"] for h in HOOKS] == [1, 1]


def test_threshold_is_relative_to_the_standardised_norm_by_default():
    assert relative_threshold(2048) == pytest.approx(15.0, abs=1e-12)  # the paper's width and threshold
    assert abs(relative_threshold(576) - 7.955) < 1e-3
    assert ContextRules().resolved(576).threshold == relative_threshold(576)
    assert ContextRules(threshold=15.0).resolved(576).threshold == 15.0  # absolute: one option away
    assert ContextRules(threshold=0.0).threshold == 0.0  # every active latent
    for bad in (float("nan"), float("inf"), -1.0, True):
        with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
            ContextRules(threshold=bad)
    with pytest.raises(ValueError, match="resolved"):
        contexts_from_activations([["a"]], [Activation(0, 0, 0, 99.0, 0)], HOOKS, ContextRules())


def test_find_feature_contexts_on_a_model(tmp_path):
    from sae_lens_routing.offline.local_model import load_local_model

    model = load_local_model(tiny_hf_llama_folder(tmp_path / "m"))
    torch.manual_seed(0)
    sae = RouteSAE(RouteSAEConfig(d_in=32, d_sae=64, k=8, hook_names=HOOKS))
    tokens = torch.randint(3, 300, (6, 16), generator=torch.Generator().manual_seed(0))
    results = collect_feature_contexts(sae, model, tokens, rules=ContextRules(threshold=0.5)).results()
    assert results, "a low threshold must collect contexts"
    out = sae.forward_routed(
        torch.stack([model.run_with_cache(tokens, names_filter=HOOKS)[1][h] for h in HOOKS], -2)
    )
    feature = next(iter(results))
    best = max(c["activation"] for c in results[feature].contexts)
    assert abs(best - out.feature_acts[..., feature].max().item()) < 1e-3
    # the written file states the count next to its threshold and the tokens read
    collect = collect_feature_contexts(sae, model, tokens, rules=ContextRules(threshold=0.5))
    payload = collect.write(tmp_path / "features.json")
    saved = json.loads((tmp_path / "features.json").read_text())
    assert saved["n_counted"] == payload["n_counted"] == count_features(results, ContextRules(threshold=0.5))
    assert saved["threshold"] == 0.5 and saved["tokens_read"] == tokens.numel()
    assert saved["threshold_rule"] == saved["rules"]["threshold_rule"] == "absolute (set by the caller)"
    assert len(saved["features"]) == len(results)
