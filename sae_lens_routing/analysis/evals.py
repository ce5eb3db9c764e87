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

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sae_lens_routing.analysis.splice import routed_splice
from sae_lens_routing.saes.router import routing_entropy_bits

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens counts as dense


def _token_batches(tokens_or_store: Any, n_batches: int, batch_size: int | None) -> list[torch.Tensor]:
    if isinstance(tokens_or_store, torch.Tensor):
        if tokens_or_store.ndim != 2:
            raise ValueError(
                f"tokens must be [n_sequences, seq_len], got shape {tuple(tokens_or_store.shape)}"
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
) -> dict[str, Any]:
    """Reconstruction, sparsity, routing and downstream (CE, KL) metrics of `sae` on `model`."""
    hooks = list(sae.cfg.hook_names)
    L, d_sae = len(hooks), sae.cfg.d_sae
    excluded = _excluded_ids(tokens_or_store, exclude_special_tokens)
    totals: dict[str, float] = dict.fromkeys(
        ["sq_err", "nmse", "l0", "n", "ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero", "n_ce"], 0.0
    )
    kl_batchmean_sae: list[float] = []
    kl_batchmean_zero: list[float] = []
    fired = torch.zeros(d_sae, dtype=torch.float64)
    share = torch.zeros(L, dtype=torch.float64)
    sum_in = sum_in_sq = None
    for tokens in _token_batches(tokens_or_store, n_batches, batch_size):
        keep = (
            ~torch.isin(tokens, excluded.to(tokens.device))
            if excluded is not None
            else torch.ones_like(tokens, dtype=torch.bool)
        )
        clean_logits, cache = model.run_with_cache(tokens, names_filter=hooks)
        out = sae.forward_routed(torch.stack([cache[h] for h in hooks], dim=-2))
        sae_in, sae_out = out.sae_in[keep].double(), out.sae_out[keep].double()
        totals["sq_err"] += (sae_out - sae_in).pow(2).sum().item()
        totals["nmse"] += (
            ((sae_out - sae_in).pow(2).sum(-1) / sae_in.pow(2).sum(-1).clamp_min(1e-12)).sum().item()
        )
        acts = out.feature_acts[keep]
        totals["l0"] += (acts != 0).sum().item()
        totals["n"] += len(acts)
        fired += (acts != 0).double().sum(0).cpu()
        share += out.layer_weights[keep].double().sum(0).cpu()
        sum_in = sae_in.sum(0) if sum_in is None else sum_in + sae_in.sum(0)
        sum_in_sq = sae_in.pow(2).sum(0) if sum_in_sq is None else sum_in_sq + sae_in.pow(2).sum(0)

        with routed_splice(model, sae, positions=keep):  # special tokens stay clean, as in SAELens's evals
            sae_logits = model(tokens)
        with routed_splice(model, sae, replacement="zero"):
            zero_logits = model(tokens)
        target_keep = keep[:, :-1] & keep[:, 1:]  # predict a real token from a real token
        for name, logits in (("clean", clean_logits), ("sae", sae_logits), ("zero", zero_logits)):
            totals[f"ce_{name}"] += next_token_ce(logits, tokens)[target_keep].sum().item()
        totals["n_ce"] += target_keep.sum().item()
        for name, logits, official in (
            ("sae", sae_logits, kl_batchmean_sae),
            ("zero", zero_logits, kl_batchmean_zero),
        ):
            kl = kl_per_token(clean_logits, logits)
            totals[f"kl_{name}"] += kl[keep].sum().item()
            official.append(kl_official_batchmean(clean_logits, logits))
    n, n_ce = totals["n"], totals["n_ce"]
    if n == 0 or n_ce == 0:
        raise ValueError("no tokens left to evaluate after excluding special tokens")
    assert sum_in is not None and sum_in_sq is not None
    total_var = (sum_in_sq - sum_in.pow(2) / n).sum().item()
    ce_clean, ce_sae, ce_zero = (totals[f"ce_{k}"] / n_ce for k in ("clean", "sae", "zero"))
    freq = fired / n
    metrics: dict[str, Any] = {
        "reconstruction_quality/normalized_mse": totals["nmse"] / n,
        "reconstruction_quality/explained_variance": 1 - totals["sq_err"] / max(total_var, 1e-12),
        "reconstruction_quality/fvu": totals["sq_err"] / max(total_var, 1e-12),
        "reconstruction_quality/mse": totals["sq_err"] / (n * sae.cfg.d_in),
        "sparsity/l0": totals["l0"] / n,
        "sparsity/latents_silent_on_eval": int((freq == 0).sum()),
        "sparsity/dense_latents": int((freq > DENSE_THRESHOLD).sum()),
        "model_performance_preservation/ce_loss_without_sae": ce_clean,
        "model_performance_preservation/ce_loss_with_sae": ce_sae,
        "model_performance_preservation/ce_loss_with_ablation": ce_zero,
        "model_performance_preservation/ce_loss_score": (ce_zero - ce_sae) / (ce_zero - ce_clean)
        if ce_zero != ce_clean
        else float("nan"),
        "model_performance_preservation/delta_ce": ce_sae - ce_clean,
        "model_behavior_preservation/kl_div_with_sae": totals["kl_sae"] / n,
        "model_behavior_preservation/kl_div_with_ablation": totals["kl_zero"] / n,
        "model_behavior_preservation/kl_div_score": 1 - totals["kl_sae"] / max(totals["kl_zero"], 1e-12),
        "model_behavior_preservation/kl_div_with_sae_official_batchmean": sum(kl_batchmean_sae)
        / len(kl_batchmean_sae),
        "model_behavior_preservation/kl_div_with_ablation_official_batchmean": sum(kl_batchmean_zero)
        / len(kl_batchmean_zero),
        "metrics/total_tokens_evaluated": int(n),
        "routing/share": {h: s for h, s in zip(hooks, (share / n).tolist())},
        "routing/entropy_bits": routing_entropy_bits(share),
    }
    return metrics


def _excluded_ids(source: Any, explicit: list[int] | torch.Tensor | None) -> torch.Tensor | None:
    if explicit is not None:
        return torch.as_tensor(explicit, dtype=torch.long)
    store_ids = getattr(source, "exclude_special_tokens", None)
    return store_ids.cpu() if isinstance(store_ids, torch.Tensor) else None


def next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position next-token cross-entropy [batch, seq-1]."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def kl_per_token(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(clean || other) at each position [batch, seq]."""
    p = clean.float().log_softmax(-1)
    q = other.float().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1)


def kl_official_batchmean(clean: torch.Tensor, other: torch.Tensor) -> float:
    """The official code's unit: F.kl_div(log q, p, reduction='batchmean') over [batch, seq, vocab]."""
    return F.kl_div(other.float().log_softmax(-1), clean.float().softmax(-1), reduction="batchmean").item()


def write_routing_chart(metrics: dict[str, Any], path: str | Path) -> Path:
    """PNG bar chart of the per-layer routing share in `metrics["routing/share"]`."""
    from sae_lens_routing.analysis.plots import render_routing_share_chart

    shares = metrics["routing/share"]
    return render_routing_share_chart(list(shares.values()), list(shares), path)
