"""The judge's explanations and scores on the dashboard page, in its selector and in the Neuronpedia batch."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import tiny_hf_llama_folder

from sae_lens_routing import RouteSAE, RouteSAEConfig
from sae_lens_routing.dashboard.report import dashboard_data, neuronpedia_batch, write_dashboard_html

HOOKS = [f"blocks.{i}.hook_resid_post" for i in range(3)]
INTERP = {
    "judge_model": "gpt-4o-mini",
    "summary": {},
    "features": {
        "0": {
            "paper": "scored", "category": "low-level", "score": 4, "explanation": "the word <b>bank</b>",
            "detection": "scored", "detection_explanation": "money words", "detection_accuracy": 0.75,
        },
        "1": {"paper": "unparsed", "category": None, "score": None, "explanation": None, "detection": None},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from sae_lens_routing.offline.local_model import load_local_model

    root = tmp_path_factory.mktemp("interp_dash")
    model = load_local_model(tiny_hf_llama_folder(root / "model"))
    with torch.no_grad():
        model.W_U.mul_(50)
    torch.manual_seed(0)
    cfg = RouteSAEConfig(d_in=32, d_sae=16, k=8, hook_names=HOOKS, rescale_acts_by_decoder_norm=True)
    sae = RouteSAE(cfg)
    tokens = torch.randint(3, 300, (24, 24), generator=torch.Generator().manual_seed(0))
    data = dashboard_data(sae, model, tokens, "0-2")
    write_dashboard_html(data, root / "report.html", INTERP)
    return root, data


def test_page_carries_the_explanations_for_the_panel_and_selector(page):
    root, data = page
    html = (root / "report.html").read_text()
    blob = json.loads(re.search(r"id='interp-panel-data'>(.*?)</script>", html, re.S).group(1))
    assert blob["0"]["explanation"] == "the word <b>bank</b>" and blob["0"]["detection_accuracy"] == 0.75
    assert blob["1"]["paper"] == "unparsed" and "interp-panel-body" in html
    assert "routing-panel-data" in html  # the routing panel is still there


def test_neuronpedia_features_carry_explanations_in_neuronpedia_format(page):
    _, data = page
    batch = neuronpedia_batch(data, sae_set="routesae", interpretability=INTERP)
    by_index = {int(f["feature_index"]): f for f in batch["features"]}
    paper, detection = by_index[0]["explanations"]
    assert paper["description"] == "the word <b>bank</b>" and paper["index"] == "0"
    assert paper["layer"] == "2-routesae" and paper["modelId"] == batch["model_id"]
    assert paper["explanationModelName"] == "gpt-4o-mini"
    assert paper["scores"] == [
        {
            "value": 4,
            "explanationScoreTypeName": "routesae-monosemanticity-1-5",
            "explanationScoreModelName": "gpt-4o-mini",
        }
    ]
    assert detection["description"] == "money words" and detection["scores"][0]["value"] == 0.75
    assert by_index[1]["explanations"] == []  # judged, but its answer did not parse
    assert "explanations" not in neuronpedia_batch(data)["features"][0]


@pytest.mark.browser
def test_selector_and_panel_show_the_explanation_in_chromium(page):
    from chromium_page import render

    root, _ = page
    choose = """(async () => {
        const select = document.querySelector('#dropdown-container select');
        const labels = Array.from(select.options).map(o => o.textContent);
        select.value = '0';
        select.dispatchEvent(new Event('change', {bubbles: true}));
        await new Promise(r => setTimeout(r, 200));
        const body = document.getElementById('interp-panel-body');
        return [labels, body.innerText, body.querySelectorAll('b').length];
    })()"""
    rendered = render(root / "report.html", script=choose)
    assert rendered.console_errors == []
    labels, panel, bold = rendered.script_result
    assert "0 \u00b7 low-level 4/5, detection 0.75 \u00b7 the word <b>bank</b>" in labels
    assert "1 \u00b7  \u00b7" not in " ".join(labels)
    assert "the word <b>bank</b>" in panel and "money words" in panel  # shown as text, never as markup
    assert bold == 3  # only the panel's own labels
