"""Named training recipes: `RouteTrainingSAEConfig` field sets to spread into the config.

`RouteTrainingSAEConfig()`'s own defaults are this package's recipe (chosen on a validation split of
`benchmarks/recipe.py`; measured in `benchmarks/RESULTS.md`). `OFFICIAL_RECIPE` reproduces the official
RouteSAE training rules as closely as SAELens's trainer allows, for comparisons and reproductions:

    RouteTrainingSAEConfig(d_in=576, d_sae=4608, k=32, hook_names=hooks, **OFFICIAL_RECIPE)

What SAELens's trainer cannot reproduce: it always clips the gradient norm at 1.0 (the official loop does not
clip), and the official encoder starts at nn.Linear's scale (rows of norm ~0.58) where SAELens ties it to the
unit-norm decoder. The official learning-rate schedule (5% linear warm-up, linear decay over the last 20%) is a
runner setting: `lr_warm_up_steps = steps // 20`, `lr_decay_steps = steps // 5`, `lr_end = lr`.
"""

from __future__ import annotations

from typing import Any

OFFICIAL_RECIPE: dict[str, Any] = {
    "decoder_init_norm": 1.0,  # tied init, decoder columns unit-norm before the first step
    "rescale_acts_by_decoder_norm": False,
    "unit_norm_decoder_every": 10,  # the official `--steps 10`
    "topk_relu": False,  # the official TopK keeps the k largest pre-activations as they are
    "aux_loss_coefficient": 0.0,
    "dead_feature_window_tokens": None,
}
