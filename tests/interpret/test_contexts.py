"""Detection excerpts: held-out text never reaches the explanation prompt; one routed pass feeds both
protocols."""

from __future__ import annotations

import torch
from helpers import tiny_hf_llama_folder

from sae_lens_routing import RouteSAE, RouteSAEConfig
from sae_lens_routing.analysis.feature_contexts import ContextRules
from sae_lens_routing.interpret.contexts import (
    DetectionRules,
    compute_contexts,
    detection_samples,
    explain_messages,
    read_contexts,
    write_contexts,
)


def test_heldout_excerpts_never_appear_in_the_explanation_prompt():
    gen = torch.Generator().manual_seed(0)
    n_seq, seq_len = 60, 40
    strings = [[f" w{s}_{p}" for p in range(seq_len)] for s in range(n_seq)]  # every token unique
    rows = []
    for s in range(0, n_seq, 2):  # feature 7 fires in even sequences, at a few positions each
        for p in torch.randint(0, seq_len, (3,), generator=gen).tolist():
            rows.append([s, p, 7, float(torch.rand(1, generator=gen)) * 10 + 0.1, s % 3])
    table = torch.tensor(rows)
    sample = detection_samples(strings, table, 7, DetectionRules(), seed=0)
    prompt = explain_messages(sample["explain"])[-1]["content"]
    assert len(sample["explain"]) == 10
    labels = [h["label"] for h in sample["heldout"]]
    assert labels.count(1) == 8 and labels.count(0) == 8
    assert {h["quantile"] for h in sample["heldout"] if h["label"]} == {1, 2, 3, 4}
    for h in sample["heldout"]:
        assert h["text"] not in prompt
        assert not any(tok in prompt for tok in h["text"].split())  # not one token of its sequence
    assert [e["activation"] for e in sample["explain"]] == sorted(
        (e["activation"] for e in sample["explain"]), reverse=True
    )


def test_one_routed_pass_gives_paper_contexts_detection_excerpts_and_shares(tmp_path):
    from sae_lens_routing.offline.corpus import corpus_tokens
    from sae_lens_routing.offline.local_model import load_local_model

    model = load_local_model(tiny_hf_llama_folder(tmp_path / "model"))
    hooks = [f"blocks.{i}.hook_resid_post" for i in (1, 2, 3)]
    torch.manual_seed(0)
    sae = RouteSAE(RouteSAEConfig(d_in=32, d_sae=32, k=4, hook_names=hooks)).eval()
    tokens = corpus_tokens(model, "python-topics", 40, 32)
    ctx = compute_contexts(sae, model, tokens, rules=ContextRules(threshold=0.5), seed=0)
    assert ctx.features and set(ctx.detection) == set(ctx.features) == set(ctx.layer_shares)
    for f, shares in ctx.layer_shares.items():
        assert len(shares) == 3 and abs(sum(shares) - 1) < 1e-6
        assert all({"token", "activation", "layer", "context"} <= set(c) for c in ctx.features[f])
        assert ctx.detection[f]["explain"] and all("<<" in e["text"] for e in ctx.detection[f]["explain"])
        assert all("<<" not in h["text"] for h in ctx.detection[f]["heldout"])
        assert all("<bos>" not in e["text"] for e in ctx.detection[f]["explain"])
    path = write_contexts(ctx, tmp_path / "ctx.json")
    back = read_contexts(path, hooks)
    assert back.features == ctx.features and back.detection == ctx.detection
    assert back.layer_shares == ctx.layer_shares


def test_evaluates_feature_contexts_json_serves_the_paper_protocol_only(tmp_path):
    import json

    import pytest

    from sae_lens_routing.analysis.feature_contexts import (
        Activation,
        ContextRules,
        contexts_from_activations,
        write_feature_contexts,
    )
    from sae_lens_routing.interpret import JudgeConfig, interpret_features

    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    strings = [[f" w{p}" for p in range(8)] for _ in range(6)]  # 8 token types: a feature
    acts = [Activation(s, p, 3, 20.0 + p, p % 2) for s in range(6) for p in range(8)]
    rules = ContextRules(threshold=15.0)
    found = contexts_from_activations(strings, acts, hooks, rules)
    write_feature_contexts(found, tmp_path / "fc.json", rules, tokens_read=48, hook_names=hooks)
    ctx = read_contexts(tmp_path / "fc.json", hooks)
    assert list(ctx.features) == [3] and ctx.detection is None
    assert sum(ctx.layer_shares[3]) == pytest.approx(1.0)
    judge = JudgeConfig(url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ValueError, match="no detection excerpts.*--protocol paper"):
        interpret_features(judge=judge, out=tmp_path, contexts=ctx, protocol="detection")
    data = json.loads((tmp_path / "fc.json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**data, "hook_names": hooks[::-1]}))
    with pytest.raises(ValueError, match="was made for hooks"):
        read_contexts(tmp_path / "other.json", hooks)


def test_a_rare_feature_keeps_half_its_sequences_held_out():
    strings = [[f" w{s}_{p}" for p in range(10)] for s in range(20)]
    table = torch.tensor([[s, 3, 1, float(s + 1), 0] for s in range(5)])  # fires in 5 sequences only
    sample = detection_samples(strings, table, 1, DetectionRules(), seed=0)
    assert [e["activation"] for e in sample["explain"]] == [5.0, 4.0, 3.0]
    assert sorted(h["activation"] for h in sample["heldout"] if h["label"]) == [1.0, 2.0]
