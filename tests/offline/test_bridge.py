"""TransformerLens 3 bridge models (`model_class_name: TransformerBridge`) on an architecture
HookedTransformer does not convert (a tiny random Granite, built from a config): routed activations equal
Hugging Face's hidden states, and training, the splice, evals, contexts and steering run on it. On
transformer-lens 2.x the option is refused in one line."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_hf_llama_folder, write_config

from sae_lens_routing.offline.local_model import require_bridge
from sae_lens_routing.training.run_config import load_run_config

try:
    require_bridge()
    HAS_BRIDGE = True
except ValueError:
    HAS_BRIDGE = False
needs_bridge = pytest.mark.skipif(
    not HAS_BRIDGE,
    reason="TransformerBridge needs transformer-lens>=3 (the floor has 2.x; make test-latest runs it)",
)
HOOKS = [f"blocks.{i}.hook_resid_post" for i in range(3)]


@pytest.mark.skipif(HAS_BRIDGE, reason="the refusal is for transformer-lens 2.x (make test)")
def test_bridge_refused_on_transformer_lens_2(tmp_path):
    message = r"^model_class_name: TransformerBridge needs transformer-lens>=3 \(installed 2\."
    with pytest.raises(ValueError, match=message):
        load_run_config(
            write_config(tmp_path, model_path=str(tmp_path), model_class_name="TransformerBridge")
        )


@pytest.fixture(scope="module")
def granite(tmp_path_factory):
    from transformers import GraniteConfig

    from sae_lens_routing.offline.local_model import load_bridge

    folder = tiny_hf_llama_folder(tmp_path_factory.mktemp("granite"), config_class=GraniteConfig)
    return folder, load_bridge(model_path=folder)


@needs_bridge
def test_routed_activations_equal_hf_hidden_states(granite):
    from transformers import AutoModelForCausalLM

    from sae_lens_routing.offline.local_model import load_local_model
    from sae_lens_routing.saes.routed_activations import routed_activations

    folder, bridge = granite
    with pytest.raises(ValueError, match="Llama-architecture"):  # HookedTransformer has no converter for it
        load_local_model(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokens = torch.randint(3, 300, (2, 10))
    acts, _, _ = routed_activations(bridge, tokens, HOOKS)
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    torch.testing.assert_close(
        acts, torch.stack([hidden[i + 1] for i in range(3)], dim=-2), atol=1e-5, rtol=1e-5
    )


@needs_bridge
def test_train_splice_evals_contexts_steer_on_a_bridge(tmp_path, granite):
    from sae_lens_routing.analysis.evals import run_route_evals
    from sae_lens_routing.analysis.feature_contexts import ContextRules, collect_feature_contexts
    from sae_lens_routing.analysis.splice import plan_from_routed, routed_splice, steer
    from sae_lens_routing.dashboard.report import (
        dashboard_data,
        neuronpedia_batch,
        scan_tokens,
        write_dashboard_html,
    )
    from sae_lens_routing.saes.routed_activations import routed_activations
    from sae_lens_routing.training.run_config import train_from_config

    folder, bridge = granite
    run = load_run_config(
        write_config(
            tmp_path,
            model_path=str(folder),
            model_class_name="TransformerBridge",
            sae={"d_sae": 64, "k": 4, "hook_names": HOOKS},
        )
    )
    runner, summary = train_from_config(run)
    assert summary["training_tokens"] >= 2048 and type(runner.model).__name__ == "SAETransformerBridge"
    sae = runner.sae
    assert sae.cfg.metadata.model_class_name == "TransformerBridge"

    tokens = torch.randint(3, 300, (2, 12))
    clean = bridge(tokens)
    with routed_splice(bridge, sae, use_error_term=True) as plans:
        kept = bridge(tokens)
    torch.testing.assert_close(kept, clean, atol=1e-4, rtol=1e-4)  # the error term restores the clean output
    assert len(plans) == 1 and plans[0].layer_index.shape == (2, 12)
    with routed_splice(bridge, sae):
        spliced = bridge(tokens)
    plan = plan_from_routed(sae, sae.forward_routed(routed_activations(bridge, tokens, HOOKS)[0]))
    with routed_splice(bridge, sae, plan=plan):  # the clean pass inside the forward == one made beforehand
        torch.testing.assert_close(bridge(tokens), spliced, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(spliced, clean, atol=1e-3)

    metrics = run_route_evals(sae, bridge, tokens)
    assert metrics["model_performance_preservation/ce_loss_with_sae"] == pytest.approx(
        torch.nn.functional.cross_entropy(spliced[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()).item(),
        rel=1e-4,
    )
    rules = ContextRules(threshold=0.0, min_contexts=1)
    assert collect_feature_contexts(sae, bridge, tokens, rules=rules).results()
    assert scan_tokens(sae, bridge, tokens).layer_index.shape == tokens.shape
    page_tokens = torch.randint(3, 300, (4, 24), generator=torch.Generator().manual_seed(0))
    data = dashboard_data(sae, bridge, page_tokens, "top:3")  # sae-dashboard on the bridge, through a view
    acts = sae.forward_routed(routed_activations(bridge, page_tokens, HOOKS)[0]).feature_acts
    for feature, fd in data.vis_data.feature_data_dict.items():
        for seq in fd.sequence_data.seq_group_data[0].seq_data:  # top examples: forward_routed's values
            row, pos = seq.original_index, seq.qualifying_token_index
            assert seq.feat_acts[5] == pytest.approx(float(acts[row, pos, feature]), abs=1e-4)
    write_dashboard_html(data, tmp_path / "bridge.html")
    assert len(neuronpedia_batch(data)["features"]) == len(data.features) >= 1
    result = steer(bridge, sae, "the of", {0: 50.0}, max_new_tokens=3)
    assert not torch.allclose(result.steered_logits[0], result.unsteered_logits[0])
