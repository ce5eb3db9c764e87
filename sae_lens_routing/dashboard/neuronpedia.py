"""Neuronpedia batch JSON: sae-dashboard's `NeuronpediaConverter` output of a `DashboardData`, each feature
with its `routing`, the batch with `routed_hook_names` and `dead_latents`."""

from __future__ import annotations

import json
from typing import Any

from sae_lens_routing.dashboard.report import DashboardData
from sae_lens_routing.interpret.results import neuronpedia_explanations
from sae_lens_routing.saes.config import hook_layer


def vocab_dict(model: Any) -> dict[int, str]:
    """Token id -> token string as Neuronpedia displays it (sae-dashboard's HTML escapes applied)."""
    from sae_dashboard.neuronpedia.neuronpedia_runner import OUT_OF_RANGE_TOKEN
    from sae_dashboard.utils_fns import HTML_ANOMALIES

    tokens = model.tokenizer.convert_ids_to_tokens(list(range(len(model.tokenizer))))
    out = {}
    for i, tok in enumerate(tokens):
        for bad, good in HTML_ANOMALIES.items():
            tok = tok.replace(bad, good)
        out[i] = tok
    return out | {i: OUT_OF_RANGE_TOKEN for i in range(len(out), model.cfg.d_vocab)}


def neuronpedia_batch(
    data: DashboardData,
    *,
    sae_set: str = "routesae",
    model_id: str | None = None,
    interpretability: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The batch; given an `interpretability.json`'s content, each judged feature gains its `explanations` in
    Neuronpedia's format (layer = the SAE id)."""
    from sae_dashboard.neuronpedia.neuronpedia_converter import NeuronpediaConverter
    from sae_dashboard.neuronpedia.neuronpedia_runner_config import NeuronpediaRunnerConfig

    hooks, model = data.hook_names, data.vis_data.model
    np_cfg = NeuronpediaRunnerConfig(
        sae_set=sae_set, sae_path="", outputs_dir="", model_id=model_id or data.model_name,
        layer=hook_layer(hooks[-1]),
    )
    np_json = NeuronpediaConverter.convert_to_np_json(model, data.vis_data, np_cfg, vocab_dict(model))
    batch = json.loads(np_json)
    for feature in batch["features"]:
        index = int(feature["feature_index"])
        feature["routing"] = {"hook_names": hooks, **data.routing[index]}
        if interpretability is not None:
            feature["explanations"] = neuronpedia_explanations(
                interpretability, index, model_id=np_cfg.model_id, np_layer=f"{np_cfg.layer}-{sae_set}"
            )
    return batch | {"routed_hook_names": hooks, "dead_latents": data.dead_latents}
