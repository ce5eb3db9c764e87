"""sae-dashboard's feature-centric report for a RouteSAE, unchanged, plus a routing panel, viewable offline.

sae-dashboard reads one hook point (`blocks.N.<name with resid>`, forward stopped after block N) and, for SAEs
whose activation is SAELens's `TopK`, calls `sae.encode` on it. `routed_hook_point` adds a pseudo `HookPoint`,
`blocks.N.hook_resid_routed` (N = the last routed block), whose value is the L routed activations stacked to
[batch, pos, L*d_in]; `RouteSAE.encode` routes that stack, so the dashboard sees exactly the features of
`forward_routed`.

Logit effects are sae-dashboard's `W_dec @ W_U` (the direct path to the logits). The decoder lives in the
standardised space; a token's raw reconstruction is `std * x_hat / router_weight + mean` (per-token positive scales
and a per-token constant vector), so a latent's raw-space direction is its decoder row times a positive per-token
scale: the ranking of boosted/suppressed tokens is exact, absolute sizes are per standardised unit. sae-dashboard
assumes the final norm's gain is folded into `W_U`; `final_norm_folded_into_unembed` makes that true for the run.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sae_lens_routing.atomic import atomic_write_text
from sae_lens_routing.dashboard.offline_assets import inline_assets
from sae_lens_routing.dashboard.routing_panel import add_routing_panel, routing_stats
from sae_lens_routing.dashboard.unembed_fold import final_norm_folded_into_unembed
from sae_lens_routing.saes.routed_hook_point import routed_hook_point


def parse_features(spec: str | Sequence[int], d_sae: int) -> list[int]:
    """`"0-63"`, `"1,5,9"`, `"0-9,20"` or a list of ints -> validated feature indices."""
    if isinstance(spec, str):
        features: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                features.extend(range(lo, hi + 1))
            elif part:
                features.append(int(part))
    else:
        features = [int(f) for f in spec]
    bad = [f for f in features if not 0 <= f < d_sae]
    if not features or bad:
        raise ValueError(f"features must be indices in [0, d_sae={d_sae}), got {bad or spec!r}")
    return sorted(set(features))


# sae-dashboard's default feature-centric layout: 5 tokens of context each side of a top example (plus one
# before, for the loss effect), and 20 top examples
CONTEXT_POSITIONS = 11
TOP_EXAMPLES = 20


DASHBOARD_FEATURES = 24


def dashboard_features(sae_folder: Path, n: int = DASHBOARD_FEATURES) -> list[int]:
    """The first `n` latents by index that fired on 0.001%-10% of training tokens (SAELens's saved log10
    densities): an unbiased sample of live, non-dense latents rather than the most frequent, least specific ones."""
    from sae_lens.constants import SPARSITY_FILENAME
    from safetensors.torch import load_file

    log_density = load_file(sae_folder / SPARSITY_FILENAME)["sparsity"]
    live = ((log_density > -5) & (log_density < -1)).nonzero().flatten().tolist()
    if not live:
        raise ValueError(
            f"no live latents in {sae_folder / SPARSITY_FILENAME}: train longer (training_tokens)"
        )
    return live[:n]


def check_tokens(tokens: torch.Tensor, d_vocab: int) -> None:
    """Fail early and clearly where sae-dashboard would fail deep inside (or silently show nothing)."""
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be an integer tensor [n_sequences, seq_len], got {shape}")
    n, seq_len = tokens.shape
    if seq_len <= CONTEXT_POSITIONS or n * (seq_len - CONTEXT_POSITIONS) < TOP_EXAMPLES:
        raise ValueError(
            f"tokens must have seq_len > {CONTEXT_POSITIONS} and n_sequences * (seq_len - {CONTEXT_POSITIONS}) >= "
            f"{TOP_EXAMPLES} (sae-dashboard's context and top-example count), got {tuple(tokens.shape)}"
        )
    if tokens.min() < 0 or tokens.max() >= d_vocab:
        raise ValueError(
            f"tokens must be ids in [0, d_vocab={d_vocab}), got [{tokens.min()}, {tokens.max()}]"
        )


def routed_dashboard(
    sae: Any,
    model: Any,
    tokens: torch.Tensor,
    features: str | Sequence[int],
    out_html: str | Path,
    *,
    minibatch_size_tokens: int = 16,
    minibatch_size_features: int = 64,
    offline: bool = True,
) -> dict[str, Any]:
    """Write sae-dashboard's feature-centric HTML for `features` of a RouteSAE, with a routing panel.

    Returns {"vis_data": SaeVisData, "routing": per-feature routing stats, "path": out_html}.
    """
    from sae_dashboard.data_writing_fns import save_feature_centric_vis
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    if not hasattr(sae, "forward_routed"):
        raise ValueError(f"sae must be a RouteSAE (architecture 'routesae'), got {type(sae).__name__}")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(
            "the model needs a tokenizer (load it with load_local_model or HookedTransformer.from_pretrained)"
        )
    check_tokens(tokens, model.cfg.d_vocab)
    feature_list = parse_features(features, sae.cfg.d_sae)
    encoder = copy.deepcopy(sae)  # sae-dashboard folds decoder norms in place
    with routed_hook_point(model, encoder) as hook_name, final_norm_folded_into_unembed(model):
        cfg = SaeVisConfig(
            hook_point=hook_name,
            features=feature_list,
            minibatch_size_features=minibatch_size_features,
            minibatch_size_tokens=minibatch_size_tokens,
            device=str(tokens.device),
            verbose=False,
        )
        vis_data = SaeVisRunner(cfg).run(encoder=encoder, model=model, tokens=tokens)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:  # sae-dashboard writes the stock page; we post-process it
        stock = Path(scratch) / "stock.html"
        save_feature_centric_vis(sae_vis_data=vis_data, filename=stock)
        html = stock.read_text(encoding="utf-8")
    stats = routing_stats(sae, model, tokens, vis_data)
    html = add_routing_panel(html, stats, list(sae.cfg.hook_names))
    if offline:
        html = inline_assets(html)
    atomic_write_text(out_html, html)
    return {"vis_data": vis_data, "routing": stats, "path": out_html}
