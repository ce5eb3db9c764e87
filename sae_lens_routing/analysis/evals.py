"""`run_route_evals`: how well a RouteSAE reconstructs, and how much of the model's behaviour survives its
routed splice. Metric names follow SAELens's `run_evals` where SAELens has the concept.

CE/KL compare three forwards of the same tokens: clean, routed splice (each token's routed layer replaced by the
SAE reconstruction) and zero-ablation (that position replaced by zeros). CE loss recovered =
(CE_zero - CE_sae) / (CE_zero - CE_clean). KL is reported per token (SAELens's unit) and also in the official
code's unit, `F.kl_div(..., reduction="batchmean")` over [batch, seq, vocab]: summed over a sequence's positions,
averaged over sequences (the paper's numbers of ~100-400 are in that unit). Positions whose *input* token is a
special token (BOS, padding) are excluded everywhere, as SAELens excludes them from training; as in SAELens's
`get_recons_loss`, the SAE splice leaves them clean (the SAE never saw them, and a garbled attention-sink BOS
corrupts every later token), while the zero-ablation baseline zeroes every position, also as SAELens does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

import torch

from sae_lens_routing.analysis.feature_contexts import ContextRules, FeatureContextCollector
from sae_lens_routing.analysis.splice import plan_from_routed, routed_splice
from sae_lens_routing.saes.route_sae import RoutedOutput
from sae_lens_routing.saes.routed_activations import (
    check_hooks_in_model,
    is_bridge,
    routed_activations,
    routed_block_range,
)
from sae_lens_routing.saes.routed_metrics import RoutedMetrics, routing_shares


def _token_batches(
    tokens_or_store: Any, n_batches: int, batch_size: int | None, d_vocab: int | None = None
) -> list[torch.Tensor]:
    if isinstance(tokens_or_store, torch.Tensor):
        if tokens_or_store.ndim != 2:
            raise ValueError(
                f"tokens must be [n_sequences, seq_len], got shape {tuple(tokens_or_store.shape)}"
            )
        if tokens_or_store.is_floating_point() or tokens_or_store.dtype == torch.bool:
            raise ValueError(f"tokens must be integer token ids, got dtype {tokens_or_store.dtype}")
        if d_vocab is not None and len(tokens_or_store) and not (
            0 <= int(tokens_or_store.min()) and int(tokens_or_store.max()) < d_vocab
        ):
            raise ValueError(
                f"tokens must be ids in [0, d_vocab={d_vocab}) of the model, got ids "
                f"{int(tokens_or_store.min())}..{int(tokens_or_store.max())}; tokenize with this model's tokenizer"
            )
        size = batch_size or len(tokens_or_store)
        return list(tokens_or_store.split(size))
    if hasattr(tokens_or_store, "get_batch_tokens"):
        return [tokens_or_store.get_batch_tokens(batch_size) for _ in range(n_batches)]
    raise ValueError("tokens_or_store must be a [n, seq] token tensor or an ActivationsStore")


@torch.no_grad()
def run_route_evals(
    sae: Any,
    model: Any,
    tokens_or_store: Any,
    *,
    n_batches: int = 4,
    batch_size: int | None = None,
    exclude_special_tokens: list[int] | torch.Tensor | None = None,
    on_routed: Callable[[torch.Tensor, RoutedOutput], None] | None = None,
    features: FeatureContextCollector | None = None,
) -> dict[str, Any]:
    """Reconstruction, sparsity, routing, downstream (CE, KL) and feature-count metrics of `sae` on `model`.

    Per batch: one clean forward (logits and the routed layers), one routing, then the SAE splice and the
    zero-ablation splice from that routing, each starting at the first routed block (earlier blocks are the
    clean ones). `on_routed(tokens, routed)` sees each batch's routing, so a caller needing more than metrics
    routes nothing again. Features are counted from the same routing (`features/*`, with the threshold and the
    tokens read) by `features`, or by a collector with the default rules; pass your own to keep its contexts."""
    hooks = list(sae.cfg.hook_names)
    check_hooks_in_model(model, hooks)
    excluded = _excluded_ids(tokens_or_store, exclude_special_tokens)
    if features is None:
        features = FeatureContextCollector(model, sae, ContextRules(), None if excluded is None else excluded.tolist())
    recon = RoutedMetrics(hooks, sae.cfg.d_sae, sae.cfg.d_in)
    downstream = DownstreamMetrics()
    first = _splice_start(model, hooks)
    entry = f"blocks.{first}.hook_resid_pre"
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    for tokens in _token_batches(tokens_or_store, n_batches, batch_size, d_vocab):
        keep = (
            ~torch.isin(tokens, excluded.to(tokens.device))
            if excluded is not None
            else torch.ones_like(tokens, dtype=torch.bool)
        )
        acts, clean_logits, extras = routed_activations(
            model, tokens, hooks, full_forward=True, extra_hooks=(entry,)
        )
        out = sae.forward_routed(acts)
        recon.update(out, keep)
        if on_routed is not None:
            on_routed(tokens, out)
        features(tokens, out)
        spliced = {}
        # special tokens stay clean in the SAE splice, as in SAELens's evals; the ablation zeroes every position
        for replacement, positions in (("sae", keep), ("zero", None)):
            plan = plan_from_routed(sae, out, replacement=replacement).to(acts.dtype)
            with routed_splice(model, sae, positions=positions, plan=plan):
                resumed = first > 0 or not is_bridge(model)  # a bridge cannot start from the residual stream
                spliced[replacement] = model(extras[entry], start_at_layer=first, tokens=tokens) if resumed else model(tokens)
        downstream.update(tokens, keep, clean_logits, spliced["sae"], spliced["zero"])
    return {**recon.compute(), **downstream.compute(), **features.metrics()}


def _splice_start(model: Any, hooks: list[str]) -> int:
    """The block a spliced forward starts at: the first routed one, or 0 when the model's attention mask depends
    on the tokens (left padding), which a forward started from the residual stream would not see, or for a bridge."""
    if is_bridge(model):
        return 0
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "padding_side", "right") == "left":
        return 0
    block_range = routed_block_range(hooks)
    return 0 if block_range is None else block_range[0]


class DownstreamMetrics:
    """Streaming CE/KL of the clean, SAE-spliced and zero-ablated forwards (each logit tensor normalised once)."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(["ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero", "n_ce", "n"], 0.0)
        self.official: dict[str, list[float]] = {"sae": [], "zero": []}

    def update(
        self, tokens: torch.Tensor, keep: torch.Tensor, clean: torch.Tensor, sae: torch.Tensor, zero: torch.Tensor
    ) -> None:
        target_keep = keep[:, :-1] & keep[:, 1:]  # predict a real token from a real token
        logp = {name: logits.float().log_softmax(-1) for name, logits in (("clean", clean), ("sae", sae), ("zero", zero))}
        for name, lp in logp.items():
            self.totals[f"ce_{name}"] += _ce(lp, tokens)[target_keep].sum().item()
        p_clean = logp["clean"].exp()
        for name in ("sae", "zero"):
            kl = _kl(logp["clean"], logp[name], p_clean)
            self.totals[f"kl_{name}"] += kl[keep].sum().item()
            self.official[name].append(kl.sum().item() / len(tokens))  # F.kl_div(..., "batchmean")
        self.totals["n_ce"] += target_keep.sum().item()
        self.totals["n"] += keep.sum().item()

    def compute(self) -> dict[str, Any]:
        t = self.totals
        if t["n_ce"] == 0:
            raise ValueError("no tokens left to evaluate after excluding special tokens")
        ce_clean, ce_sae, ce_zero = (t[f"ce_{k}"] / t["n_ce"] for k in ("clean", "sae", "zero"))
        return {
            "model_performance_preservation/ce_loss_without_sae": ce_clean,
            "model_performance_preservation/ce_loss_with_sae": ce_sae,
            "model_performance_preservation/ce_loss_with_ablation": ce_zero,
            "model_performance_preservation/ce_loss_score": (ce_zero - ce_sae) / (ce_zero - ce_clean)
            if ce_zero != ce_clean
            else None,
            "model_performance_preservation/delta_ce": ce_sae - ce_clean,
            "model_behavior_preservation/kl_div_with_sae": t["kl_sae"] / t["n"],
            "model_behavior_preservation/kl_div_with_ablation": t["kl_zero"] / t["n"],
            "model_behavior_preservation/kl_div_score": 1 - t["kl_sae"] / max(t["kl_zero"], 1e-12),
            "model_behavior_preservation/kl_div_with_sae_official_batchmean": mean(self.official["sae"]),
            "model_behavior_preservation/kl_div_with_ablation_official_batchmean": mean(self.official["zero"]),
        }


def _excluded_ids(source: Any, explicit: list[int] | torch.Tensor | None) -> torch.Tensor | None:
    if explicit is not None:
        return torch.as_tensor(explicit, dtype=torch.long)
    store_ids = getattr(source, "exclude_special_tokens", None)
    return store_ids.cpu() if isinstance(store_ids, torch.Tensor) else None


def next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position next-token cross-entropy [batch, seq-1]."""
    return _ce(logits.float().log_softmax(-1), tokens)


def kl_per_token(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(clean || other) at each position [batch, seq]."""
    return _kl(clean.float().log_softmax(-1), other.float().log_softmax(-1))


def kl_official_batchmean(clean: torch.Tensor, other: torch.Tensor) -> float:
    """The official code's unit, F.kl_div(log q, p, reduction='batchmean') over [batch, seq, vocab]: the KL summed
    over every position, divided by the batch size."""
    return kl_per_token(clean, other).sum().item() / len(clean)


def _ce(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return -logp[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)


def _kl(logp_clean: torch.Tensor, logp_other: torch.Tensor, p_clean: torch.Tensor | None = None) -> torch.Tensor:
    p = logp_clean.exp() if p_clean is None else p_clean
    return (p * (logp_clean - logp_other)).sum(-1)


def write_routing_chart(metrics: dict[str, Any], path: str | Path) -> Path:
    """PNG bar chart of the per-layer routing share in `metrics` (`routing/share/<hook>`)."""
    from sae_lens_routing.analysis.plots import render_routing_share_chart

    shares = routing_shares(metrics)
    return render_routing_share_chart(list(shares.values()), list(shares), path)
