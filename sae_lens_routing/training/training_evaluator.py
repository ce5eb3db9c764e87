"""Routed metrics during training (the stock evaluator would splice a single hook and measure the wrong thing)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.training.prefetch import PrefetchingIterator

from sae_lens_routing.saes.route_sae import normalized_mse
from sae_lens_routing.saes.router import routing_entropy_bits
from sae_lens_routing.training.store import MultiLayerActivationsStore


@torch.no_grad()
def routed_reconstruction_metrics(sae: Any, batches: list[torch.Tensor]) -> dict[str, float]:
    """NormMSE, explained variance, L0 and per-layer routing share over raw [n, L, d_in] batches."""
    sq_err = total = nmse = l0 = 0.0
    n = 0
    share = torch.zeros(len(sae.cfg.hook_names), dtype=torch.float64)
    sum_in = sum_in_sq = None
    for acts in batches:
        out = sae.forward_routed(acts.to(sae.device))
        sae_in, sae_out = out.sae_in.double(), out.sae_out.double()
        sq_err += (sae_out - sae_in).pow(2).sum().item()
        nmse += normalized_mse(out.sae_out, out.sae_in).item() * len(acts)
        l0 += (out.feature_acts != 0).sum().item()
        share += out.layer_weights.double().sum(0).cpu()
        sum_in = sae_in.sum(0) if sum_in is None else sum_in + sae_in.sum(0)
        sum_in_sq = sae_in.pow(2).sum(0) if sum_in_sq is None else sum_in_sq + sae_in.pow(2).sum(0)
        n += len(acts)
    if n == 0:
        raise ValueError("no tokens to evaluate (all batches were empty)")
    assert sum_in is not None and sum_in_sq is not None
    total = (sum_in_sq - sum_in.pow(2) / n).sum().item()
    metrics = {
        "normalized_mse": nmse / n,
        "explained_variance": 1 - sq_err / max(total, 1e-12),
        "l0": l0 / n,
        "n_tokens": float(n),
    }
    for i, s in enumerate((share / n).tolist()):
        metrics[f"routing_share/layer_{i}"] = s
    metrics["routing_entropy_bits"] = routing_entropy_bits(share)
    return metrics


@dataclass
class RoutedTrainingEvaluator:
    """Called by SAELens's trainer every `eval_every_n_wandb_logs` logging steps (W&B runs only)."""

    activations_store: MultiLayerActivationsStore
    n_eval_batches: int = 2

    def __call__(self, sae: Any, data_provider: Any, activation_scaler: Any) -> dict[str, Any]:
        with paused(data_provider):
            batches = [
                self.activations_store.get_multi_layer_llm_batch() for _ in range(max(1, self.n_eval_batches))
            ]
        metrics = {f"eval/{k}": v for k, v in routed_reconstruction_metrics(sae, batches).items()}
        metrics.update(routing_share_chart(sae.cfg.hook_names, metrics))
        return metrics


def paused(data_provider: Any) -> AbstractContextManager[Any]:
    """Hold a `prefetch_llm_batches` producer thread while the caller reads the store itself (as SAELens's
    evaluator does): the store's token generator cannot be driven from two threads."""
    return data_provider.paused() if isinstance(data_provider, PrefetchingIterator) else nullcontext()


def routing_share_chart(hook_names: list[str], metrics: dict[str, Any]) -> dict[str, Any]:
    """A W&B bar chart of the routing share per layer (empty when wandb is not running)."""
    import wandb

    if wandb.run is None or getattr(wandb.run, "disabled", False):
        return {}
    table = wandb.Table(columns=["layer", "share"])
    for i, hook in enumerate(hook_names):
        table.add_data(hook, metrics[f"eval/routing_share/layer_{i}"])
    return {"plots/routing_share": wandb.plot.bar(table, "layer", "share", title="Routing share per layer")}
