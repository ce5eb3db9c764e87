"""sae-dashboard's feature-centric report for a RouteSAE, unchanged, plus a routing panel, viewable offline.

sae-dashboard reads one hook point and, for SAELens `TopK` SAEs, calls `sae.encode` on it: `routed_hook_point`
adds `blocks.N.hook_resid_routed` (N = the last routed block) carrying the L routed layers stacked, and
`RouteSAE.encode` routes that stack, so the page shows exactly `forward_routed`'s features.

Logit effects are sae-dashboard's `W_dec @ W_U`. The decoder lives in the standardised space; a token's raw
reconstruction is `std * x_hat / router_weight + mean` (positive per-token scales plus a per-token constant), so
the ranking of boosted/suppressed tokens is exact and sizes are per standardised unit. sae-dashboard assumes the
final norm's gain is folded into `W_U`; `final_norm_folded_into_unembed` makes that true for the run.

`dashboard_data` computes everything once (a routed scan of the tokens picks and orders the latents, then
sae-dashboard runs on them); the HTML writer here and the Neuronpedia writer both read that result. The page
opens on the most active latent that fills its top-activation rows, says what was requested and what was
found, and shows each token as the text it decodes to (byte-level BPE pieces such as "Â£" as "£"; line breaks
as ↵, where sae-dashboard writes a literal `\\n`, the same text as a backslash-n token).
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
from sae_lens_routing.saes.routed_activations import is_bridge, routed_hook_point

TOP_EXAMPLES = 20  # sae-dashboard's top-example count
DEFAULT_FEATURES = "top:24"
NEWLINE = "\u21b5"  # ↵
# a line break in byte-level BPE, in SentencePiece's byte fallback, raw
NEWLINE_PIECES = ("\u010a", "<0x0A>", "\n")


def parse_features(spec: str | Sequence[int], d_sae: int) -> tuple[list[int], int | None]:
    """`"top:24"` -> (every latent, 24); `"0-63"`, `"1,5,9"`, `"0-9,20"` or a list of ints -> (them, None)."""
    text = spec.strip() if isinstance(spec, str) else ""
    if text.startswith("top:"):
        if not text[4:].isdigit() or not 1 <= int(text[4:]) <= d_sae:
            raise ValueError(f"features 'top:N' needs an integer 1 <= N <= d_sae={d_sae}, got {spec!r}")
        return list(range(d_sae)), int(text[4:])
    if not isinstance(spec, str) and not all(isinstance(f, int) and not isinstance(f, bool) for f in spec):
        raise ValueError(f"features must be 'top:N' or latent indices (integers, not booleans), got {spec!r}")
    try:
        features = [int(f) for f in spec] if not isinstance(spec, str) else []
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            features.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        features = []
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
    features: list[int]  # full pages first, then largest max activation: the page opens on features[0]
    dead_latents: list[int]  # requested latents that never fired on the tokens (not shown)
    hook_names: list[str]
    model_name: str  # the SAE's cfg.metadata.model_name
    requested: str = ""  # the features argument as given ("top:24", "0-63")
    n_candidates: int = 0  # latents it named (top:N: every latent of the SAE)

    def summary(self) -> str:
        """What was requested and what was found, in one line (the page shows the same)."""
        fired = self.n_candidates - len(self.dead_latents)
        if self.requested.startswith("top:"):
            found = (
                f"the {len(self.features)} most active of the {fired} latents that fired on these tokens (those "
                f"with {TOP_EXAMPLES}+ activating examples first); {len(self.dead_latents)} of the SAE's "
                f"{self.n_candidates} latents never fired"
            )
        else:
            found = f"{fired} fired and are shown; {len(self.dead_latents)} never fired on these tokens"
        return f"{self.requested or self.n_candidates} requested: {found}; opens on latent {self.features[0]}"


def dashboard_data(
    sae: Any, model: Any, tokens: torch.Tensor, features: str | Sequence[int] = DEFAULT_FEATURES
) -> DashboardData:
    """Route the tokens once, keep the live latents of `features` most active first, run sae-dashboard on them."""
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    if not hasattr(sae, "forward_routed"):
        raise ValueError(f"sae must be a RouteSAE (architecture 'routesae'), got {type(sae).__name__}")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("the model needs a tokenizer (load_local_model or from_pretrained)")
    if is_bridge(model):  # the routed hook point is added as a module; a bridge has no public hook rescan
        raise ValueError(
            "dashboards need a HookedTransformer model (model_class_name: HookedTransformer or model_path); a "
            "TransformerBridge model gives the routed latent statistics (dashboard.latent_stats.scan_tokens) only"
        )
    check_tokens(tokens, model.cfg.d_vocab)
    candidates, limit = parse_features(features, sae.cfg.d_sae)
    scan = scan_tokens(sae, model, tokens, batch_size=16)
    shown, dead = scan.rank(candidates, limit, full=TOP_EXAMPLES)
    if not shown:
        raise ValueError(f"none of features {features!r} fired on these tokens; try features='top:24'")
    encoder = copy.deepcopy(sae)  # sae-dashboard folds decoder norms in place
    with routed_hook_point(model, encoder) as hook_name, final_norm_folded_into_unembed(model):
        cfg = SaeVisConfig(hook_name, shown, 64, 16, device=str(tokens.device), verbose=False)  # minibatches
        vis_data = SaeVisRunner(cfg).run(encoder=encoder, model=model, tokens=tokens)
    scan.tidy(vis_data, shown)
    routing, hooks = scan.routing_stats(vis_data, shown), list(sae.cfg.hook_names)
    requested = features if isinstance(features, str) else f"{len(candidates)} latents"
    return DashboardData(
        vis_data, routing, shown, dead, hooks, str(sae.cfg.metadata.model_name), requested, len(candidates)
    )


def display_tokens(tokenizer: Any) -> dict[int, str]:
    """Token id -> the text it shows: what a byte-level BPE piece decodes to ("Â£" -> "£", "Ġday" -> " day"),
    other tokenizers' pieces as they are (sae-dashboard handles SentencePiece's "▁"); line breaks as ↵.
    A piece holding part of a multi-byte character has no text of its own and keeps its piece."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    out: dict[int, str] = {}
    for piece, token_id in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([piece]) if byte_level else piece
        text = piece if "\ufffd" in text else text
        for newline in NEWLINE_PIECES:
            text = text.replace(newline, NEWLINE)
        out[token_id] = text
    return out


class _TextByIdVocab:
    """What sae-dashboard's writer reads of `tokenizer.vocab`: `(text, id)` pairs, which it inverts to id -> text.
    Pairs rather than a dict, so two tokens that show the same text stay two tokens."""

    def __init__(self, texts: dict[int, str]):
        self.texts = texts

    def items(self) -> list[tuple[str, int]]:
        return [(text, token_id) for token_id, text in self.texts.items()]


def write_dashboard_html(
    data: DashboardData, out_html: str | Path, interpretability: dict[str, Any] | None = None
) -> Path:
    """sae-dashboard's feature-centric page of `data`, opening on its most active latent, plus the routing panel
    (and the judge's explanations when an `interpretability.json`'s content is given).

    sae-dashboard's writer reads token strings from `model.tokenizer.vocab` only, so it is handed a model view
    whose vocabulary holds each token's display text (`display_tokens`; the real model is not touched)."""
    from sae_dashboard.data_writing_fns import save_feature_centric_vis

    texts = display_tokens(data.vis_data.model.tokenizer)
    view = SimpleNamespace(tokenizer=SimpleNamespace(vocab=_TextByIdVocab(texts)))
    with tempfile.TemporaryDirectory() as scratch:  # sae-dashboard writes the stock page; we post-process it
        stock = Path(scratch) / "stock.html"
        vis_data = dataclasses.replace(data.vis_data, model=view)
        save_feature_centric_vis(sae_vis_data=vis_data, filename=stock, feature_idx=data.features[0])
        html = stock.read_text(encoding="utf-8")
    html = add_routing_panel(
        html, data.routing, data.hook_names, data.features, data.dead_latents, data.summary()
    )
    if interpretability is not None:
        from sae_lens_routing.dashboard.interpretability_panel import add_interpretability_panel
        from sae_lens_routing.interpret.results import explanations_by_feature

        html = add_interpretability_panel(html, explanations_by_feature(interpretability))
    return atomic_write_text(out_html, inline_assets(html))


def routed_dashboard(
    sae: Any, model: Any, tokens: torch.Tensor, features: str | Sequence[int], out_html: str | Path
) -> DashboardData:
    """`dashboard_data` written as sae-dashboard's feature-centric HTML, with a routing panel."""
    data = dashboard_data(sae, model, tokens, features)
    write_dashboard_html(data, out_html)
    return data
