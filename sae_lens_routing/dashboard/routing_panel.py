"""The routing panel added to sae-dashboard's HTML: for each feature, where its top activations were routed from,
plus the latents that never fired; the feature selector is put in the page's order (most active first).

sae-dashboard has no component extension point (a fixed component map, JS loaded from its package folder), so
the panel is added by post-processing the written HTML in this one module: a JSON blob with the per-feature
statistics and a small script that shows the selected feature's row whenever the dashboard's feature selector
changes. The selector lists its options in JavaScript's key order (integer keys ascending), so the script moves
them into `order` once the page is set up.
"""

from __future__ import annotations

import json
from typing import Any

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
      const pct = (100 * s.top_activation_share[i]).toFixed(1);
      rows += '<tr><td>' + h + '</td><td><div class="routing-bar" style="width:' + pct + 'px"></div> ' + pct +
        '%</td><td>' + s.active_tokens_per_layer[i] + '</td><td>' + s.mean_activation[i].toFixed(3) + '</td></tr>';
    });
    el.innerHTML = '<p>Feature <b>' + feature + '</b>: routed layers of the ' + s.n_top_activations +
      ' top activations shown below (those &gt; 0); active on ' + s.n_active_tokens + ' tokens in all.</p>' +
      '<table class="routing-table"><tr><th>routed layer</th><th>share of top activations</th>' +
      '<th>active tokens</th><th>mean activation (when active)</th></tr>' + rows + '</table>';
  }
  const select = () => document.querySelector('#dropdown-container select');
  const current = () => (select() ? select().value : data.order[0]);
  document.addEventListener('change', function (e) {
    if (e.target && e.target.closest && e.target.closest('#dropdown-container')) { render(current()); }
  });
  window.addEventListener('load', function () {
    data.order.forEach(function (f) {  // sae-dashboard lists integer keys ascending; put them in our order
      const option = select() && select().querySelector('option[value="' + f + '"]');
      if (option) { select().appendChild(option); }
    });
    render(current());
  });
})();
"""

# sae-dashboard lays its columns out in one row that overflows narrow windows (the right-hand interval column was
# cut off at 1400 px); wrapping them keeps every column on screen (`div.` outranks the stock rule, which comes later).
PANEL_CSS = """
div.grid-container { display: flex; flex-wrap: wrap; align-items: flex-start; row-gap: 20px; }
#routing-panel { margin: 10px 20px; font-family: sans-serif; font-size: 13px; }
.routing-table { margin-left: 0; border-collapse: collapse; }
.routing-table td, .routing-table th { padding: 2px 8px; text-align: left; }
.routing-bar { display: inline-block; height: 10px; background: #4C72B0; vertical-align: middle; }
"""


DEAD_SHOWN = 50


def dead_note(summary: str, dead: list[int]) -> str:
    """The visible line: what was requested and found (`summary`), then the latents that never fired."""
    if not dead:
        return summary
    more = (
        f" and {len(dead) - DEAD_SHOWN} more (all in the page data's dead_latents)"
        if len(dead) > DEAD_SHOWN
        else ""
    )
    return f"{summary}. Never fired: {', '.join(map(str, dead[:DEAD_SHOWN]))}{more}"


def add_routing_panel(
    html: str,
    stats: dict[int, dict[str, Any]],
    hook_names: list[str],
    order: list[int],
    dead: list[int],
    summary: str,
) -> str:
    """Insert the panel (and the requested/found note) right after sae-dashboard's feature selector."""
    anchor = "<div id='dropdown-container'></div>"
    if anchor not in html:
        raise ValueError("sae-dashboard's HTML has no feature selector container; its template changed")
    data = {
        "hooks": hook_names,
        "order": order,
        "dead_latents": dead,
        "stats": {str(k): v for k, v in stats.items()},
    }
    payload = json.dumps(data).replace("</", "<\\/")
    panel = (
        f"{anchor}\n<div id='routing-panel'><p id='dead-latents'>{dead_note(summary, dead)}</p><h3>Routing</h3>"
        "<div id='routing-panel-body'></div></div>\n"
        f"<style>{PANEL_CSS}</style>\n"
        f"<script type='application/json' id='routing-panel-data'>{payload}</script>\n"
        f"<script>{PANEL_JS}</script>"
    )
    return html.replace(anchor, panel, 1)
