"""sae-dashboard's page post-processed (it has no extension point): our panels added, d3/plotly inlined."""

import json
import os
import sys
from pathlib import Path
from typing import Any

from sae_lens_routing.offline.local_model import package_folder

ANCHOR = "<div id='dropdown-container'></div>"
DEAD_SHOWN = 50

# The judge's text goes in with textContent only, so an explanation can never inject markup.
PANEL_JS = """(function () {
  const blob = id => { const el = document.getElementById(id); return el && JSON.parse(el.textContent); };
  const routing = blob('routing-panel-data'), judged = blob('interp-panel-data') || {};
  const select = () => document.querySelector('#dropdown-container select');
  const current = () => (select() ? select().value : String(routing.order[0]));
  const summary = d => [d.paper === 'scored' ? `${d.category} ${d.score}/5` : '',
    d.detection === 'scored' ? `detection ${d.detection_accuracy.toFixed(2)}` : ''].filter(x => x).join(', ');
  const line = (el, label, text) => { const p = el.appendChild(document.createElement('p'));
    p.appendChild(document.createElement('b')).textContent = label + ': '; p.append(text); };
  function render(f) {
    const s = routing.stats[f], body = document.getElementById('interp-panel-body'), d = judged[f];
    const pct = i => (100 * s.top_activation_share[i]).toFixed(1);
    const rows = s ? routing.hooks.map((h, i) => `<tr><td>${h}</td><td><div class="routing-bar"
      style="width:${pct(i)}px"></div> ${pct(i)}%</td><td>${s.active_tokens_per_layer[i]}</td>
      <td>${s.mean_activation[i].toFixed(3)}</td></tr>`).join('') : '';
    document.getElementById('routing-panel-body').innerHTML = !s ? `<p>No routing data for feature ${f}.</p>`
      : `<p>Feature <b>${f}</b>: routed layers of the ${s.n_top_activations} top activations shown below
      (those &gt; 0); active on ${s.n_active_tokens} tokens in all.</p><table class="routing-table"><tr>
      <th>routed layer</th><th>share of top activations</th><th>active tokens</th>
      <th>mean activation (when active)</th></tr>${rows}</table>`;
    if (!body) { return; } else { body.textContent = ''; }
    if (!d) { return line(body, 'Feature ' + f, 'not among the judged features'); }
    line(body, 'Judge', summary(d) || 'answers unparsed');
    [['Explanation (paper rubric)', d.explanation], ['Explanation (detection)', d.detection_explanation]]
      .forEach(([label, text]) => text && line(body, label, text));
  }
  document.addEventListener('change', e => e.target.closest('#dropdown-container') && render(current()));
  window.addEventListener('load', function () {
    const options = select() ? Array.from(select().options) : [];  // sae-dashboard's: integer keys ascending
    routing.order.forEach(f => options.filter(o => o.value == f).forEach(o => select().appendChild(o)));
    options.filter(o => judged[o.value]).forEach(o => {
      const d = judged[o.value], text = d.explanation || d.detection_explanation;
      o.textContent = `${o.value} \\u00b7 ${summary(d)}` + (text ? ` \\u00b7 ${text.slice(0, 60)}` : '');
    });
    render(current());
  });
})();"""

# Wrapping sae-dashboard's one-row grid keeps every column on screen at 1400 px (`div.` outranks its rule).
PANEL_CSS = """div.grid-container { display: flex; flex-wrap: wrap; align-items: flex-start; row-gap: 20px; }
#routing-panel, #interp-panel { margin: 10px 20px; font-family: sans-serif; font-size: 13px; }
.routing-table { margin-left: 0; border-collapse: collapse; }
.routing-table td, .routing-table th { padding: 2px 8px; text-align: left; }
.routing-bar { display: inline-block; height: 10px; background: #4C72B0; vertical-align: middle; }"""


def _blob(element_id: str, data: Any) -> str:
    payload = json.dumps(data).replace("</", "<\\/")
    return f"<script type='application/json' id='{element_id}'>{payload}</script>\n"


def add_panels(html: str, routing: dict[str, Any], note: str, judged: dict[str, Any] | None = None) -> str:
    """After sae-dashboard's feature selector: `note`, the routing panel and, given `judged`, the judge's."""
    dead, rest, panel = routing["dead_latents"], len(routing["dead_latents"]) - DEAD_SHOWN, f"{ANCHOR}\n"
    if dead:
        more = f" and {rest} more (all in the page data's dead_latents)" if rest > 0 else ""
        note += f". Never fired: {', '.join(map(str, dead[:DEAD_SHOWN]))}{more}"
    if judged is not None:
        panel += "<div id='interp-panel'><h3>Interpretability (LLM judge)</h3><div id='interp-panel-body'>"
        panel += "</div></div>\n" + _blob("interp-panel-data", {str(f): dict(v) for f, v in judged.items()})
    panel += f"<div id='routing-panel'><p id='dead-latents'>{note}</p><h3>Routing</h3>"
    panel += f"<div id='routing-panel-body'></div></div>\n<style>{PANEL_CSS}</style>\n"
    panel += _blob("routing-panel-data", routing) + f"<script>{PANEL_JS}</script>"
    return html.replace(ANCHOR, panel, 1)


def inline_assets(html: str) -> str:
    """The CDN script tags replaced by the code, so the page works offline (d3: where `make venv` put it)."""
    d3 = Path(os.environ.get("SAE_LENS_ROUTING_D3", Path(sys.prefix) / "share/sae_lens_routing/d3.v6.min.js"))
    plotly = package_folder("plotly") / "package_data" / "plotly.min.js"
    d3_url, plotly_url = "https://d3js.org/d3.v6.min.js", "https://cdn.plot.ly/plotly-latest.min.js"
    for url, path in [(d3_url, d3), (plotly_url, plotly)]:
        code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")  # would end the element
        html = html.replace(f'<script src="{url}"></script>', f"<script>\n{code}\n</script>")
    return html
