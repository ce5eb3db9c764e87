"""Routed metrics during training (the stock evaluator would splice a single hook and measure the wrong thing)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.training.prefetch import PrefetchingIterator

from sae_lens_routing.saes.routed_metrics import RoutedMetrics, routing_shares
from sae_lens_routing.training.store import MultiLayerActivationsStore


@torch.no_grad()
def routed_reconstruction_metrics(sae: Any, batches: list[torch.Tensor]) -> dict[str, Any]:
    """`RoutedMetrics` (SAELens-named NormMSE, explained variance, L0, routing share...) over raw [n, L, d_in]
    batches; summed over torchrun ranks when a process group is running."""
    metrics = RoutedMetrics(list(sae.cfg.hook_names), sae.cfg.d_sae, sae.cfg.d_in)
    for acts in batches:
        metrics.update(sae.forward_routed(acts.to(sae.device)))
    metrics.all_reduce()
    return metrics.compute()


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
    shares = routing_shares({k.removeprefix("eval/"): v for k, v in metrics.items()})
    for hook in hook_names:
        table.add_data(hook, shares[hook])
    return {"plots/routing_share": wandb.plot.bar(table, "layer", "share", title="Routing share per layer")}
