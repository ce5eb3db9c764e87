"""TopK activation with an optional ReLU on the kept values.

Subclasses SAELens's `TopK` so tools that special-case it (sae-dashboard calls `sae.encode` for it)
treat a RouteSAE like any TopK SAE.
"""

from __future__ import annotations

import torch
from sae_lens.saes.topk_sae import TopK


class RoutedTopK(TopK):
    """Keep the k largest pre-activations per row; ReLU them only if `relu` (official RouteSAE: no ReLU)."""

    def __init__(self, k: int, relu: bool = True):
        super().__init__(k, use_sparse_activations=False)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            return super().forward(x)  # SAELens's dense TopK: its kept values are ReLU'd
        values, indices = self.topk(x)
        return torch.zeros_like(x).scatter_(-1, indices, values)

    def topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept (values, indices), for sparse decoding without the dense [.., d_sae] tensor."""
        values, indices = torch.topk(x, k=self.k, dim=-1, sorted=False)
        return (values.relu() if self.relu else values), indices
