"""The judge's explanations and scores on the dashboard: a panel for the selected feature, and each option of the
feature selector labelled with its category, score and explanation.

Like the routing panel, added by post-processing sae-dashboard's HTML (it has no extension point for this). The
judge's text is inserted with `textContent` only, so an explanation can never inject markup into the page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ANCHOR = "<div id='dropdown-container'></div>"

PANEL_JS = """
(function () {
  const data = JSON.parse(document.getElementById('interp-panel-data').textContent);
  const select = () => document.querySelector('#dropdown-container select');
  function summary(d) {
    const parts = [];
    if (d.paper === 'scored') { parts.push(d.category + ' ' + d.score + '/5'); }
    if (d.detection === 'scored') { parts.push('detection ' + d.detection_accuracy.toFixed(2)); }
    return parts.join(', ');
  }
  function render(feature) {
    const el = document.getElementById('interp-panel-body');
    const d = data[String(feature)];
    el.textContent = '';
    const line = (label, text) => {
      const p = document.createElement('p');
      const b = document.createElement('b');
      b.textContent = label + ': ';
      p.appendChild(b);
      p.appendChild(document.createTextNode(text));
      el.appendChild(p);
    };
    if (!d) { line('Feature ' + feature, 'not among the judged features'); return; }
    line('Judge', summary(d) || 'answers unparsed');
    if (d.explanation) { line('Explanation (paper rubric)', d.explanation); }
    if (d.detection_explanation) { line('Explanation (detection)', d.detection_explanation); }
  }
  document.addEventListener('change', function (e) {
    if (e.target && e.target.closest && e.target.closest('#dropdown-container')) { render(select().value); }
  });
  window.addEventListener('load', function () {
    if (!select()) { return; }
    Array.from(select().options).forEach(function (option) {
      const d = data[option.value];
      const text = d && (d.explanation || d.detection_explanation);
      if (d) { option.textContent = option.value + ' \\u00b7 ' + summary(d) + (text ? ' \\u00b7 ' + text.slice(0, 60) : ''); }
    });
    render(select().value);
  });
})();
"""


def add_interpretability_panel(html: str, features: Mapping[int, Mapping[str, Any]]) -> str:
    """Insert the panel after sae-dashboard's feature selector; `features` as `explanations_by_feature` gives."""
    if ANCHOR not in html:
        raise ValueError("sae-dashboard's HTML has no feature selector container; its template changed")
    payload = json.dumps({str(f): dict(v) for f, v in features.items()}).replace("</", "<\\/")
    panel = (
        f"{ANCHOR}\n<div id='interp-panel' style='margin: 10px 20px; font-family: sans-serif; font-size: 13px'>"
        "<h3>Interpretability (LLM judge)</h3><div id='interp-panel-body'></div></div>\n"
        f"<script type='application/json' id='interp-panel-data'>{payload}</script>\n"
        f"<script>{PANEL_JS}</script>"
    )
    return html.replace(ANCHOR, panel, 1)
