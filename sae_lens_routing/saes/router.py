"""Per-token standardisation, layer routing and routed TopK: what RouteSAE adds to SAELens's TopK SAE."""

import math
from dataclasses import dataclass

import torch
from sae_lens.saes.topk_sae import TopK


@dataclass
class Standardized:
    """Standardised activations and the per-token statistics needed to undo it."""

    x: torch.Tensor  # [..., L, d_in]
    mean: torch.Tensor  # [..., L, 1]
    std: torch.Tensor  # [..., L, 1] (unbiased std + eps, i.e. the divisor)

    def undo(self, x: torch.Tensor, layer_index: torch.Tensor) -> torch.Tensor:
        """Map standardised [..., d_in] values back to raw ones, with each token's stats at `layer_index`."""
        return x * at_layer(self.std, layer_index) + at_layer(self.mean, layer_index)


def at_layer(x: torch.Tensor, layer_index: torch.Tensor) -> torch.Tensor:
    """x [..., L, d] at each token's layer: [..., d]."""
    return x.gather(-2, layer_index[..., None, None].expand(*layer_index.shape, 1, x.shape[-1])).squeeze(-2)


def standardize(acts: torch.Tensor, eps: float, enabled: bool = True) -> Standardized:
    """(h - mean) / (std + eps), unbiased std as the official code; in float32 at least (bf16 loses it)."""
    work = acts.float() if acts.dtype in (torch.float16, torch.bfloat16) else acts
    if not enabled:
        ones = torch.ones_like(work[..., :1])
        return Standardized(work, torch.zeros_like(ones), ones)
    mean = work.mean(dim=-1, keepdim=True)
    std = work.std(dim=-1, keepdim=True) + eps
    return Standardized((work - mean) / std, mean, std)


@dataclass
class Routing:
    router_weights: torch.Tensor  # [..., L] softmax
    layer_weights: torch.Tensor  # [..., L] one-hot (hard) or softmax (soft)
    layer_index: torch.Tensor  # [...] argmax layer
    sae_in: torch.Tensor  # [..., d] routed input


def route(x: torch.Tensor, router_logits: torch.Tensor, routing: str) -> Routing:
    """Pick ("hard") or mix ("soft") layers of x [..., L, d] given router logits [..., L]."""
    router_weights = torch.softmax(router_logits.float(), dim=-1).to(x.dtype)
    max_weight, layer_index = router_weights.max(dim=-1)
    if routing == "soft":
        return Routing(router_weights, router_weights, layer_index, (x * router_weights[..., None]).sum(-2))
    one_hot = torch.nn.functional.one_hot(layer_index, x.shape[-2]).to(x.dtype)
    return Routing(router_weights, one_hot, layer_index, at_layer(x, layer_index) * max_weight[..., None])


def routing_entropy_bits(share: torch.Tensor) -> float:
    """Entropy (bits) of the layer shares: 0 when the router collapsed onto one layer, which NormMSE hides."""
    p = share.double().clamp_min(0)
    return float(torch.special.entr(p / p.sum().clamp_min(1e-12)).sum() / math.log(2))


class RoutedTopK(TopK):
    """SAELens's TopK (tools special-case it), the ReLU optional: the official RouteSAE has none."""

    def __init__(self, k: int, relu: bool = True):
        super().__init__(k, use_sparse_activations=False)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = self.topk(x)
        return torch.zeros_like(x).scatter_(-1, indices, values)

    def topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept (values, indices), for sparse decoding without the dense [.., d_sae] tensor."""
        values, indices = torch.topk(x, k=self.k, dim=-1, sorted=False)
        return (values.relu() if self.relu else values), indices
