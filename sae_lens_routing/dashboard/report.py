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

`dashboard_data` computes everything once (one routed scan of the tokens to pick and order the latents, then
sae-dashboard's run); the HTML writer here and the Neuronpedia writer (`neuronpedia.py`) both read that result.
The page opens on the most active latent, lists latents most active first, names the ones that never fired, and
shows line breaks as ↵ (sae-dashboard writes them as a literal `\\n`, the same text as a backslash-n token).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from sae_lens_routing.atomic import atomic_write_text
from sae_lens_routing.dashboard.latent_stats import CONTEXT_AFTER, CONTEXT_BEFORE, scan_tokens
from sae_lens_routing.dashboard.offline_assets import inline_assets
from sae_lens_routing.dashboard.routing_panel import add_routing_panel
from sae_lens_routing.dashboard.unembed_fold import final_norm_folded_into_unembed
from sae_lens_routing.saes.routed_hook_point import routed_hook_point

TOP_EXAMPLES = 20  # sae-dashboard's top-example count
DEFAULT_FEATURES = "top:24"
NEWLINE = "\u21b5"  # ↵
# a line break in byte-level BPE, in SentencePiece's byte fallback, raw
NEWLINE_PIECES = ("\u010a", "<0x0A>", "\n")


def parse_features(spec: str | Sequence[int], d_sae: int) -> tuple[list[int], int | None]:
    """`"top:24"` -> (every latent, 24); `"0-63"`, `"1,5,9"`, `"0-9,20"` or a list of ints -> (them, None)."""
    if isinstance(spec, str) and spec.strip().startswith("top:"):
        n = spec.strip()[4:]
        if not n.isdigit() or not 1 <= int(n) <= d_sae:
            raise ValueError(f"features 'top:N' needs an integer 1 <= N <= d_sae={d_sae}, got {spec!r}")
        return list(range(d_sae)), int(n)
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
        raise ValueError(f"features must be 'top:N' or indices in [0, d_sae={d_sae}), got {bad or spec!r}")
    return sorted(set(features)), None


def check_tokens(tokens: torch.Tensor, d_vocab: int) -> None:
    """Fail early and clearly where sae-dashboard would fail deep inside (or silently show nothing)."""
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be an integer tensor [n_sequences, seq_len], got {shape}")
    n, seq_len = tokens.shape
    context = CONTEXT_BEFORE + CONTEXT_AFTER
    if seq_len <= context or n * (seq_len - context) < TOP_EXAMPLES:
        raise ValueError(
            f"tokens must have seq_len > {context} and n_sequences * (seq_len - {context}) >= "
            f"{TOP_EXAMPLES} (sae-dashboard's context and top-example count), got {tuple(tokens.shape)}"
        )
    if tokens.min() < 0 or tokens.max() >= d_vocab:
        raise ValueError(
            f"tokens must be ids in [0, d_vocab={d_vocab}), got [{tokens.min()}, {tokens.max()}]"
        )


@dataclasses.dataclass
class DashboardData:
    """What both the HTML and the Neuronpedia JSON are written from."""

    vis_data: Any  # sae-dashboard's SaeVisData for `features`
    routing: dict[int, dict[str, Any]]  # per feature, see TokenScan.routing_stats
    features: list[int]  # most active first: the page opens on features[0]
    dead_latents: list[int]  # requested latents that never fired on the tokens (not shown)
    hook_names: list[str]
    model_name: str  # the SAE's cfg.metadata.model_name

    def summary(self) -> str:
        return (
            f"{len(self.features)} latents, most active first, opens on latent {self.features[0]}; "
            f"{len(self.dead_latents)} requested latents never fired"
        )


def dashboard_data(
    sae: Any,
    model: Any,
    tokens: torch.Tensor,
    features: str | Sequence[int] = DEFAULT_FEATURES,
    *,
    minibatch_size_tokens: int = 16,
    minibatch_size_features: int = 64,
) -> DashboardData:
    """Route the tokens once, keep the live latents of `features` most active first, run sae-dashboard on them."""
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    if not hasattr(sae, "forward_routed"):
        raise ValueError(f"sae must be a RouteSAE (architecture 'routesae'), got {type(sae).__name__}")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(
            "the model needs a tokenizer (load it with load_local_model or HookedTransformer.from_pretrained)"
        )
    check_tokens(tokens, model.cfg.d_vocab)
    candidates, limit = parse_features(features, sae.cfg.d_sae)
    scan = scan_tokens(sae, model, tokens, minibatch_size_tokens)
    shown, dead = scan.rank(candidates, limit)
    if not shown:
        raise ValueError(
            f"none of features {features!r} fired on these tokens; try features={DEFAULT_FEATURES!r}"
        )
    encoder = copy.deepcopy(sae)  # sae-dashboard folds decoder norms in place
    with routed_hook_point(model, encoder) as hook_name, final_norm_folded_into_unembed(model):
        cfg = SaeVisConfig(
            hook_point=hook_name,
            features=shown,
            minibatch_size_features=minibatch_size_features,
            minibatch_size_tokens=minibatch_size_tokens,
            device=str(tokens.device),
            verbose=False,
        )
        vis_data = SaeVisRunner(cfg).run(encoder=encoder, model=model, tokens=tokens)
    routing = scan.routing_stats(vis_data, shown)
    hooks = list(sae.cfg.hook_names)
    return DashboardData(vis_data, routing, shown, dead, hooks, str(sae.cfg.metadata.model_name))


def readable_vocab(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's vocabulary with line breaks as ↵ (a piece keeps its text where that would collide)."""
    vocab = tokenizer.get_vocab()
    out: dict[str, int] = {}
    for piece, token_id in vocab.items():
        readable = piece
        for newline in NEWLINE_PIECES:
            readable = readable.replace(newline, NEWLINE)
        out[piece if readable != piece and (readable in vocab or readable in out) else readable] = token_id
    return out


def write_dashboard_html(data: DashboardData, out_html: str | Path, *, offline: bool = True) -> Path:
    """sae-dashboard's feature-centric page of `data`, opening on its most active latent, plus the routing panel.

    sae-dashboard's writer reads token strings from `model.tokenizer.vocab` only, so it is handed a model view
    whose vocabulary shows line breaks readably (the real model is not touched)."""
    from sae_dashboard.data_writing_fns import save_feature_centric_vis

    view = SimpleNamespace(tokenizer=SimpleNamespace(vocab=readable_vocab(data.vis_data.model.tokenizer)))
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:  # sae-dashboard writes the stock page; we post-process it
        stock = Path(scratch) / "stock.html"
        vis_data = dataclasses.replace(data.vis_data, model=view)
        save_feature_centric_vis(sae_vis_data=vis_data, filename=stock, feature_idx=data.features[0])
        html = stock.read_text(encoding="utf-8")
    html = add_routing_panel(html, data.routing, data.hook_names, data.features, data.dead_latents)
    return atomic_write_text(out_html, inline_assets(html) if offline else html)


def routed_dashboard(
    sae: Any,
    model: Any,
    tokens: torch.Tensor,
    features: str | Sequence[int],
    out_html: str | Path,
    **kwargs: Any,
) -> DashboardData:
    """`dashboard_data` written as sae-dashboard's feature-centric HTML, with a routing panel (`kwargs`: those of
    `dashboard_data`)."""
    data = dashboard_data(sae, model, tokens, features, **kwargs)
    write_dashboard_html(data, out_html)
    return data
