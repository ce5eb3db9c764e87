"""Per-token standardisation and layer routing: the part of RouteSAE that is not a TopK SAE.

Pure functions on tensors, so the SAE classes, splicing and the store can share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Standardized:
    """Standardised activations and the per-token statistics needed to undo it."""

    x: torch.Tensor  # [..., L, d_in]
    mean: torch.Tensor  # [..., L, 1]
    std: torch.Tensor  # [..., L, 1] (unbiased std + eps, i.e. the divisor)

    def undo(self, x: torch.Tensor, layer_index: torch.Tensor | None = None) -> torch.Tensor:
        """Map standardised [..., d_in] values back to raw ones, with each token's stats at `layer_index`."""
        if layer_index is None:
            return x * self.std + self.mean
        idx = layer_index[..., None, None]
        std = self.std.gather(-2, idx).squeeze(-2)
        mean = self.mean.gather(-2, idx).squeeze(-2)
        return x * std + mean


def standardize(acts: torch.Tensor, eps: float, enabled: bool = True) -> Standardized:
    """(h - mean) / (std + eps) over the last dim, unbiased std, as the official code does.

    Computed in at least float32: bf16 activations of large models lose the mean otherwise.
    """
    work = acts.float() if acts.dtype in (torch.float16, torch.bfloat16) else acts
    if not enabled:
        ones = torch.ones_like(work[..., :1])
        return Standardized(work, torch.zeros_like(ones), ones)
    mean = work.mean(dim=-1, keepdim=True)
    std = work.std(dim=-1, keepdim=True) + eps
    return Standardized((work - mean) / std, mean, std)


def router_input(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool the L standardised layers [..., L, d] into the router's input [..., d]."""
    if mode == "sum":
        return x.sum(dim=-2)
    if mode == "mean":
        return x.mean(dim=-2)
    raise ValueError(f"router_input must be 'sum' or 'mean', got {mode!r}")


@dataclass
class Routing:
    """A routing decision for each token."""

    router_weights: torch.Tensor  # [..., L] softmax
    layer_weights: torch.Tensor  # [..., L] one-hot (hard) or softmax (soft)
    layer_index: torch.Tensor  # [...] argmax layer
    sae_in: torch.Tensor  # [..., d] routed input


def route(x: torch.Tensor, router_logits: torch.Tensor, routing: str) -> Routing:
    """Pick (hard) or mix (soft) layers of x [..., L, d] given router logits [..., L]."""
    router_weights = torch.softmax(router_logits.float(), dim=-1).to(x.dtype)
    max_weight, layer_index = router_weights.max(dim=-1)
    if routing == "hard":
        picked = x.gather(-2, layer_index[..., None, None].expand(*x.shape[:-2], 1, x.shape[-1])).squeeze(-2)
        sae_in = picked * max_weight[..., None]
        layer_weights = torch.nn.functional.one_hot(layer_index, x.shape[-2]).to(x.dtype)
    elif routing == "soft":
        sae_in = (x * router_weights[..., None]).sum(dim=-2)
        layer_weights = router_weights
    else:
        raise ValueError(f"routing must be 'hard' or 'soft', got {routing!r}")
    return Routing(router_weights, layer_weights, layer_index, sae_in)


def routing_entropy_bits(share: torch.Tensor) -> float:
    """Entropy (bits) of the fraction of tokens routed to each layer: log2(L) when tokens spread evenly over
    the L layers, 0 when the router has collapsed onto one layer. The router's collapse is easy to miss in
    NormMSE, so training logs and evals report it."""
    p = share.double().clamp_min(0)
    p = p / p.sum().clamp_min(1e-12)
    nz = p[p > 0]
    return float(-(nz * nz.log2()).sum())
