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


@torch.no_grad()
def routing_stats(
    sae: Any, model: Any, tokens: torch.Tensor, features: list[int], top_k: int = 20
) -> dict[int, dict[str, Any]]:
    """Per feature: share of its `top_k` strongest activations routed from each layer, and the mean activation
    per layer over all tokens where it is active (> 0)."""
    hooks = list(sae.cfg.hook_names)
    stop = max(int(h.split(".")[1]) for h in hooks) + 1
    acts, layers = [], []
    for batch in tokens.split(16):
        _, cache = model.run_with_cache(batch, names_filter=hooks, stop_at_layer=stop)
        out = sae.forward_routed(torch.stack([cache[h] for h in hooks], dim=-2))
        acts.append(out.feature_acts[..., features].reshape(-1, len(features)).float().cpu())
        layers.append(out.layer_index.reshape(-1).cpu())
    feature_acts, layer_index = torch.cat(acts), torch.cat(layers)
    L = len(hooks)
    stats: dict[int, dict[str, Any]] = {}
    for j, feature in enumerate(features):
        a = feature_acts[:, j]
        active = a > 0
        top = a.topk(min(top_k, len(a))).indices
        top = top[a[top] > 0]
        top_share = torch.bincount(layer_index[top], minlength=L).double() / max(len(top), 1)
        sums = torch.zeros(L, dtype=torch.float64).index_add_(0, layer_index[active], a[active].double())
        counts = torch.bincount(layer_index[active], minlength=L).double()
        mean = torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))
        stats[feature] = {
            "top_share": [round(x, 4) for x in top_share.tolist()],
            "mean_activation": [round(x, 4) for x in mean.tolist()],
            "n_active": int(active.sum()),
            "n_top": int(len(top)),
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
        '%</td><td>' + s.mean_activation[i].toFixed(3) + '</td></tr>';
    });
    el.innerHTML = '<p>Feature <b>' + feature + '</b>: ' + s.n_top + ' top activations, active on ' + s.n_active +
      ' tokens.</p><table class="routing-table"><tr><th>routed layer</th><th>share of top activations</th>' +
      '<th>mean activation (when active)</th></tr>' + rows + '</table>';
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
