"""The model card (README.md) of an uploaded routed SAE, with a routing-share chart.

A Hub visitor should see, without loading anything: which model and hooks the SAE routes over, its size and
sparsity, how much it was trained, how it did, how often each layer is chosen, and the two lines that load it.
Everything comes from the saved folder (cfg.json metadata, runner_cfg.json when the SAELens runner wrote one,
training_metrics.json with the run's final metrics and routing shares when `RouteSAETrainingRunner` wrote it)
plus what the caller adds (routing shares, metrics, token count), which replaces the folder's values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sae_lens.constants import RUNNER_CFG_FILENAME

from sae_lens_routing.analysis.plots import render_routing_share_chart
from sae_lens_routing.atomic import atomic_write_bytes
from sae_lens_routing.interpret.results import FILENAME as INTERPRETABILITY_FILENAME
from sae_lens_routing.interpret.results import card_lines, read_result
from sae_lens_routing.loading.loaders import read_cfg_json
from sae_lens_routing.saes.routed_metrics import SHARE_PREFIX
from sae_lens_routing.saes.routed_metrics import routing_shares as shares_in_metrics

CARD_FILENAME = "README.md"
CHART_FILENAME = "routing_share.png"
METRICS_FILENAME = "training_metrics.json"
# One row per quantity, whatever its source calls it (cfg.json metadata, training_metrics.json, summary.json)
_ALIASES = {"num_dead_features": "dead_features", "dead_latents": "dead_features"}
_NOT_METRICS = ("training_tokens", "training_steps", "metrics/total_tokens_evaluated")
_CARD_TAGS = "tags: [sae_lens, sae-lens-routing, routesae, sparse-autoencoder]"
"""The card's front-matter line: also how a README.md written by this package is recognised."""


def normalize_shares(shares: Sequence[float] | Mapping[str, float], hook_names: Sequence[str]) -> list[float]:
    """Per-hook shares in hook order; they must be finite, >= 0, one per routed hook, and sum to ~1."""
    if isinstance(shares, Mapping):
        unknown = sorted(set(shares) - set(hook_names))
        if unknown:
            raise ValueError(f"routing_shares names hooks not routed by this SAE: {unknown}")
        values = [float(shares.get(h, 0.0)) for h in hook_names]
    else:
        values = [float(s) for s in shares]
    if len(values) != len(hook_names):
        raise ValueError(
            f"routing_shares must have one value per routed hook ({len(hook_names)}), got {len(values)}"
        )
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"routing_shares must be finite and >= 0, got {values}")
    if abs(sum(values) - 1.0) > 0.02:
        raise ValueError(
            f"routing_shares must sum to 1 (fraction of tokens per layer), sum is {sum(values):.4f}"
        )
    return values


def read_training_metrics(folder: Path) -> dict[str, Any]:
    """The run's final metrics the runner saved beside the SAE (empty when there are none)."""
    path = folder / METRICS_FILENAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}


def card_metrics(*sources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metrics merged under short names (`sparsity/l0` and `l0` are one row), later sources winning; routing
    shares (shown in their own section) and token counts (in the table above) are left out."""
    merged: dict[str, Any] = {}
    for source in sources:
        for key, value in (source or {}).items():
            if key in _NOT_METRICS or key.startswith(SHARE_PREFIX) or value is None:
                continue
            short = key.rsplit("/", 1)[-1]
            merged[_ALIASES.get(short, short)] = value
    return merged


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_card_markdown(
    cfg: Mapping[str, Any],
    *,
    repo_id: str,
    sae_id: str,
    training_tokens: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    chart_path: str | None = None,
    shares: Sequence[float] | None = None,
    interpretability: dict[str, Any] | None = None,
) -> str:
    """Markdown of the card; `chart_path` is the chart's path relative to where the card is shown."""
    meta = dict(cfg.get("metadata") or {})
    hooks = list(cfg["hook_names"])
    model = meta.get("model_name") or "unknown"
    final = card_metrics({k: meta.get(k) for k in ("l0", "num_dead_features")}, metrics)
    lines = [
        "---",
        "library_name: saelens",
        _CARD_TAGS,
        "---",
        "",
        f"# RouteSAE `{sae_id}` for {model}",
        "",
        "A routed sparse autoencoder (RouteSAE, Shi et al. 2025, arXiv 2503.08200): one shared TopK SAE reads the "
        "residual stream at several layers, and a router picks, per token, the layer it encodes. Made with the "
        "sae-lens-routing plugin for [SAELens](https://github.com/decoderesearch/SAELens).",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{model}` |",
        f"| routed hooks (L={len(hooks)}) | {', '.join(f'`{h}`' for h in hooks)} |",
        f"| d_in / d_sae | {cfg['d_in']} / {cfg['d_sae']} |",
        f"| k (TopK) | {cfg['k']} |",
        f"| routing / router input | {cfg.get('routing', 'hard')} / {cfg.get('router_input', 'sum')} |",
        f"| training tokens | {f'{training_tokens:,}' if training_tokens else 'not recorded'} |",
        f"| dtype | {cfg.get('dtype', 'float32')} |",
        "",
        "## Final metrics",
        "",
    ]
    if final:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in final.items()]
    else:
        lines.append("Not recorded.")
    lines += ["", "## Routing share", ""]
    if chart_path and shares is not None:
        lines.append(f"![share of tokens routed to each layer]({chart_path})")
        lines.append("")
        lines.append(" | ".join(f"`{h}` {100 * s:.1f}%" for h, s in zip(hooks, shares)))
    else:
        lines.append("Not recorded.")
    if interpretability is not None:
        lines += ["", "## Interpretability (LLM judge)", "", *card_lines(interpretability)]
    lines += [
        "",
        "## Load it",
        "",
        "```python",
        "import sae_lens_routing  # registers the 'routesae' architecture with SAELens",
        "from sae_lens import SAE",
        "",
        f'sae = SAE.from_pretrained("{repo_id}", "{sae_id}")',
        "out = sae.forward_routed(acts)  # acts: [..., L, d_in], the routed hooks' activations stacked",
        "```",
        "",
        f'Or, with integrity checks on load: `sae_lens_routing.load_route_sae("{repo_id}", "{sae_id}")`.',
        "",
    ]
    return "\n".join(lines)


def read_training_tokens(folder: Path) -> int | None:
    """`training_tokens` from the runner_cfg.json the SAELens runner saves beside the SAE, if any."""
    path = folder / RUNNER_CFG_FILENAME
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("training_tokens")
    except (json.JSONDecodeError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) else None


def write_model_card(
    folder: str | Path,
    *,
    repo_id: str,
    sae_id: str,
    routing_shares: Sequence[float] | Mapping[str, float] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training_tokens: int | None = None,
    chart_prefix: str = "",
    write: bool = True,
) -> tuple[Path, str]:
    """Write README.md (and routing_share.png when shares are given) into the SAE folder.

    Returns the card's path and the same card with the chart linked as `chart_prefix + routing_share.png`
    (e.g. prefix "<sae_id>/" for the copy shown at the repo root). A README.md this package did not write
    (one without the card's tag line) is never replaced: refused, naming it. `write=False` (a dry run) checks
    the same and writes nothing.
    """
    folder = Path(folder)
    cfg = read_cfg_json(folder)
    run_metrics = read_training_metrics(folder)
    if routing_shares is None:
        routing_shares = shares_in_metrics(run_metrics) or None
    _check_card_replaceable(folder, routing_shares is not None)
    if training_tokens is not None and (not isinstance(training_tokens, int) or training_tokens < 0):
        raise ValueError(f"training_tokens must be a non-negative integer, got {training_tokens!r}")
    shares = None
    if routing_shares is not None:
        shares = normalize_shares(routing_shares, cfg["hook_names"])
        if write:
            render_routing_share_chart(shares, cfg["hook_names"], folder / CHART_FILENAME)
    tokens = training_tokens if training_tokens is not None else read_training_tokens(folder)
    tokens = tokens if tokens is not None else run_metrics.get("training_tokens")
    interp_path = folder / INTERPRETABILITY_FILENAME  # written there by `interpret --out <the SAE folder>`
    interpretability = read_result(interp_path) if interp_path.is_file() else None

    def render(prefix: str) -> str:
        chart = prefix + CHART_FILENAME if shares is not None else None
        return model_card_markdown(
            cfg,
            repo_id=repo_id,
            sae_id=sae_id,
            training_tokens=tokens,
            metrics=card_metrics(run_metrics, metrics),
            chart_path=chart,
            shares=shares,
            interpretability=interpretability,
        )

    card = folder / CARD_FILENAME
    if write:
        atomic_write_bytes(card, render("").encode("utf-8"))
    return card, render(chart_prefix)


def _check_card_replaceable(folder: Path, with_chart: bool) -> None:
    """README.md (and the chart beside it) are ours to replace only if the README is a card we wrote."""
    card = folder / CARD_FILENAME
    ours = card.is_file() and _CARD_TAGS in card.read_text(encoding="utf-8", errors="replace")
    theirs = [card] if card.exists() and not ours else []
    if with_chart and (folder / CHART_FILENAME).exists() and not ours:
        theirs.append(folder / CHART_FILENAME)
    if theirs:
        raise FileExistsError(
            f"{', '.join(map(str, theirs))} already exists and was not written by sae-lens-routing; the model card "
            "would replace it: move it away (or upload a copy of the SAE folder without it)"
        )
