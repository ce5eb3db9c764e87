"""Dashboards: sae-dashboard's HTML for a RouteSAE renders offline in headless Chromium, with the routing panel;
its activations are forward_routed's; the Neuronpedia export keeps sae-dashboard's keys plus routing."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch
from conftest import tiny_hf_llama_folder

from sae_lens_routing import RouteSAE, RouteSAEConfig
from sae_lens_routing.dashboard import parse_features, routed_dashboard, routed_hook_point
from sae_lens_routing.neuronpedia import neuronpedia_batch

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


def ensure_chromium() -> None:
    """The test installs Debian's chromium itself when it is missing (CI machines start without it)."""
    if shutil.which("chromium"):
        return
    cmd = "apt-get install -y chromium || (apt-get update && apt-get install -y chromium)"
    subprocess.run(["bash", "-c", cmd], check=True, capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sae_lens_routing.local_model import load_local_model

    root = tmp_path_factory.mktemp("dash")
    model = load_local_model(tiny_hf_llama_folder(root / "model"))
    with torch.no_grad():
        model.W_U.mul_(50)  # near-zero logits of a random model make the histogram code emit huge tick lists
    torch.manual_seed(0)
    sae = RouteSAE(
        RouteSAEConfig(d_in=32, d_sae=64, k=8, hook_names=HOOKS, rescale_acts_by_decoder_norm=True)
    )
    tokens = torch.randint(3, 300, (32, 24), generator=torch.Generator().manual_seed(0))
    result = routed_dashboard(sae, model, tokens, "0-5", root / "report.html")
    return root, model, sae, tokens, result


def test_dashboard_activations_equal_forward_routed(setup):
    _, model, sae, tokens, result = setup
    _, cache = model.run_with_cache(tokens, names_filter=HOOKS)
    feature_acts = sae.forward_routed(torch.stack([cache[h] for h in HOOKS], dim=-2)).feature_acts
    for feature, data in result["vis_data"].feature_data_dict.items():
        values = feature_acts[..., feature].flatten()
        top_group = data.sequence_data.seq_group_data[0]
        shown_max = float(top_group.title.split("MAX = ")[1].split()[0])
        assert abs(shown_max - values.max().item()) < 1e-3, feature
        shown = [
            a for group in data.sequence_data.seq_group_data for seq in group.seq_data for a in seq.feat_acts
        ]
        assert any(a > 0 for a in shown)
        for a in shown:  # every activation the page shows is one forward_routed computed
            assert (values - a).abs().min() < 1e-3, (feature, a)
    assert not hasattr(model.blocks[2], "hook_resid_routed")  # the pseudo hook point was removed again
    assert "blocks.2.hook_resid_routed" not in model.hook_dict


def test_pseudo_hook_point_stacks_the_routed_layers(setup):
    _, model, sae, tokens, _ = setup
    with routed_hook_point(model, sae) as name:
        _, cache = model.run_with_cache(tokens[:2], names_filter=[name, *HOOKS])
    assert name == "blocks.2.hook_resid_routed"
    torch.testing.assert_close(cache[name], torch.cat([cache[h] for h in HOOKS], dim=-1))


def test_dashboard_renders_offline_in_chromium(setup):
    ensure_chromium()
    from sae_lens_routing.browser import render_dom, screenshot

    root, *_ = setup
    html = (root / "report.html").read_text()
    assert '<script src="http' not in html  # d3 and plotly are inlined, nothing is loaded from a CDN
    rendered = render_dom(root / "report.html")
    assert rendered.console_errors == []
    dom = rendered.dom
    assert '<select id="select-0">' in dom and dom.count("<option") == 6  # the feature selector
    assert 'class="token' in dom  # top-activation tokens were drawn
    assert "share of top activations" in dom and "blocks.0.hook_resid_post" in dom  # the routing panel
    png = screenshot(root / "report.html", root / "report.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


def test_routing_stats(setup):
    _, _, _, _, result = setup
    for stats in result["routing"].values():
        assert len(stats["top_share"]) == 3
        assert stats["n_top"] == 0 or abs(sum(stats["top_share"]) - 1) < 1e-3


def test_neuronpedia_json_keeps_dashboard_keys(setup):
    from sae_dashboard.neuronpedia.neuronpedia_converter import NeuronpediaConverter
    from sae_dashboard.neuronpedia.neuronpedia_runner_config import NeuronpediaRunnerConfig

    from sae_lens_routing.neuronpedia import vocab_dict

    root, model, sae, _, result = setup
    ours = neuronpedia_batch(model, sae, result["vis_data"], result["routing"])
    np_cfg = NeuronpediaRunnerConfig(sae_set="x", sae_path="", outputs_dir="", model_id="m", layer=2)
    theirs = json.loads(
        NeuronpediaConverter.convert_to_np_json(model, result["vis_data"], np_cfg, vocab_dict(model))
    )
    assert set(theirs) <= set(ours) and "routed_hook_names" in ours
    assert len(ours["features"]) == 6
    for mine, stock in zip(ours["features"], theirs["features"]):
        assert set(stock) <= set(mine) and set(mine) - set(stock) == {"routing"}
        assert len(mine["routing"]["top_activation_share"]) == 3


def test_bad_feature_specs():
    assert parse_features("0-3,7", 10) == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="d_sae=10"):
        parse_features("5-12", 10)


def test_browser_check_catches_js_errors(tmp_path):
    ensure_chromium()
    from sae_lens_routing.browser import render_dom

    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script><p>x</p></body></html>")
    assert any("undefinedFunction" in e for e in render_dom(page).console_errors)
