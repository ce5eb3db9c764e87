"""The routing panel added to sae-dashboard's HTML: for each feature, where its top activations were routed from.

sae-dashboard has no component extension point (a fixed component map, JS loaded from its package folder), so
the panel is added by post-processing the written HTML in this one module: a JSON blob with the per-feature
statistics and a small script that shows the selected feature's row whenever the dashboard's feature selector
changes.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from sae_lens_routing.saes.config import hook_layer

TOP_GROUP_TITLE = "TOP ACTIVATIONS"


@torch.no_grad()
def routed_feature_acts(
    sae: Any, model: Any, tokens: torch.Tensor, features: list[int], batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """`forward_routed` on `tokens`: the features' activations [n, seq, F] and each token's routed layer [n, seq]."""
    hooks = list(sae.cfg.hook_names)
    stop = max(hook_layer(h) for h in hooks) + 1
    acts, layers = [], []
    for batch in tokens.split(batch_size):
        _, cache = model.run_with_cache(batch, names_filter=hooks, stop_at_layer=stop)
        out = sae.forward_routed(torch.stack([cache[h] for h in hooks], dim=-2))
        acts.append(out.feature_acts[..., features].float().cpu())
        layers.append(out.layer_index.cpu())
    return torch.cat(acts), torch.cat(layers)


def top_positions(vis_data: Any, feature: int) -> torch.Tensor:
    """[(row, position)] of the examples in sae-dashboard's top-activations group of `feature`, as the page shows
    them (sae-dashboard skips the first and last positions it needs as context)."""
    groups = vis_data.feature_data_dict[feature].sequence_data.seq_group_data
    if not groups or not groups[0].title.startswith(TOP_GROUP_TITLE):
        raise ValueError(
            f"sae-dashboard's first sequence group is not {TOP_GROUP_TITLE!r}; its layout changed"
        )
    rows = [(seq.original_index, seq.qualifying_token_index) for seq in groups[0].seq_data]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)


def routing_stats(sae: Any, model: Any, tokens: torch.Tensor, vis_data: Any) -> dict[int, dict[str, Any]]:
    """Per feature of `vis_data`: the share of the top activations the page shows (those > 0) routed from each
    layer, and the mean activation per layer over every token of `tokens` where the feature is active (> 0).

    The top examples are read off sae-dashboard's own top group, so the panel describes exactly the examples
    displayed; activations and routed layers come from `forward_routed` on the same tokens.
    """
    features = sorted(vis_data.feature_data_dict)
    feature_acts, layer_index = routed_feature_acts(sae, model, tokens, features)
    L = len(sae.cfg.hook_names)
    flat_layers = layer_index.reshape(-1)
    stats: dict[int, dict[str, Any]] = {}
    for j, feature in enumerate(features):
        rows, pos = top_positions(vis_data, feature).unbind(-1)
        top_acts = feature_acts[rows, pos, j]
        top_layers = layer_index[rows, pos][top_acts > 0]
        top_share = torch.bincount(top_layers, minlength=L).double() / max(len(top_layers), 1)
        a = feature_acts[..., j].reshape(-1)
        active = a > 0
        sums = torch.zeros(L, dtype=torch.float64).index_add_(0, flat_layers[active], a[active].double())
        counts = torch.bincount(flat_layers[active], minlength=L).double()
        mean = torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))
        stats[feature] = {
            "top_share": [round(x, 4) for x in top_share.tolist()],
            "mean_activation": [round(x, 4) for x in mean.tolist()],
            "active_tokens_per_layer": [int(c) for c in counts.tolist()],
            "n_active": int(active.sum()),
            "n_top": int(len(top_layers)),
        }
    return stats


PANEL_JS = """
(function () {
  const data = JSON.parse(document.getElementById('routing-panel-data').textContent);
  const hooks = data.hooks;
  function render(feature) {
    const s = data.stats[String(feature)];
    const el = document.getElementById('routing-panel-body');
    if (!s) { el.innerHTML = '<p>No routing data for feature ' + feature + '.</p>'; return; }
    let rows = '';
    hooks.forEach(function (h, i) {
      const pct = (100 * s.top_share[i]).toFixed(1);
      rows += '<tr><td>' + h + '</td><td><div class="routing-bar" style="width:' + pct + 'px"></div> ' + pct +
        '%</td><td>' + s.active_tokens_per_layer[i] + '</td><td>' + s.mean_activation[i].toFixed(3) + '</td></tr>';
    });
    el.innerHTML = '<p>Feature <b>' + feature + '</b>: routed layers of the ' + s.n_top +
      ' top activations shown below (those &gt; 0); active on ' + s.n_active + ' tokens in all.</p>' +
      '<table class="routing-table"><tr><th>routed layer</th><th>share of top activations</th>' +
      '<th>active tokens</th><th>mean activation (when active)</th></tr>' + rows + '</table>';
  }
  function current() {
    const select = document.querySelector('#dropdown-container select');
    return select ? select.value : Object.keys(data.stats)[0];
  }
  document.addEventListener('change', function (e) {
    if (e.target && e.target.closest && e.target.closest('#dropdown-container')) { render(current()); }
  });
  window.addEventListener('load', function () { render(current()); });
})();
"""

PANEL_CSS = """
#routing-panel { margin: 10px 20px; font-family: sans-serif; font-size: 13px; }
.routing-table { margin-left: 0; border-collapse: collapse; }
.routing-table td, .routing-table th { padding: 2px 8px; text-align: left; }
.routing-bar { display: inline-block; height: 10px; background: #4C72B0; vertical-align: middle; }
"""


def add_routing_panel(html: str, stats: dict[int, dict[str, Any]], hook_names: list[str]) -> str:
    """Insert the panel right after sae-dashboard's feature selector."""
    anchor = "<div id='dropdown-container'></div>"
    if anchor not in html:
        raise ValueError("sae-dashboard's HTML has no feature selector container; its template changed")
    payload = json.dumps({"hooks": hook_names, "stats": {str(k): v for k, v in stats.items()}}).replace(
        "</", "<\\/"
    )
    panel = (
        f"{anchor}\n<div id='routing-panel'><h3>Routing</h3><div id='routing-panel-body'></div></div>\n"
        f"<style>{PANEL_CSS}</style>\n"
        f"<script type='application/json' id='routing-panel-data'>{payload}</script>\n"
        f"<script>{PANEL_JS}</script>"
    )
    return html.replace(anchor, panel, 1)
