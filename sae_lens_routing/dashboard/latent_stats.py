"""One sparse routed pass over the tokens: latent choice, dead latents and routing panel read off it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sae_lens_routing.saes.routed_activations import check_hooks_in_model, routed_activations

# sae-dashboard's layout: 5 tokens of context each side of a top example, plus one before for the loss effect
CONTEXT_BEFORE, CONTEXT_AFTER = 6, 5


@dataclass
class TokenScan:
    """Every token's top-k latents (values, indices: [n, seq, k]) and routed layer ([n, seq])."""

    values: torch.Tensor
    indices: torch.Tensor
    layer_index: torch.Tensor
    d_sae: int
    n_layers: int

    def rank(self, candidates: list[int], limit: int | None, full: int) -> tuple[list[int], list[int]]:
        """(live candidates ordered for the page, at most `limit`; dead ones), counted where sae-dashboard can
        show a top example. Latents filling the `full` top rows first (by peak alone, rare spiky latents would
        lead), then the largest peak (the most frequent latents are dense, uninformative ones)."""
        span = slice(CONTEXT_BEFORE, self.values.shape[1] - CONTEXT_AFTER)
        values, indices = self.values[:, span].reshape(-1), self.indices[:, span].reshape(-1)
        values, indices = values[values > 0], indices[values > 0]
        counts = torch.bincount(indices, minlength=self.d_sae).tolist()
        maxima = torch.zeros(self.d_sae).scatter_reduce_(0, indices, values, "amax").tolist()
        order = sorted(candidates, key=lambda f: (counts[f] < full, -maxima[f], -counts[f], f))
        return [f for f in order if counts[f]][:limit], sorted(f for f in candidates if not counts[f])

    def tidy_and_route(self, vis_data: Any, features: list[int]) -> dict[int, dict[str, Any]]:
        """Drop top rows of activation 0 and each latent from its own correlated features (sae-dashboard's
        padding, self-correlation); return per feature the routed layers of its top rows and active tokens."""
        stats: dict[int, dict[str, Any]] = {}
        for feature in features:
            data = vis_data.feature_data_dict[feature]
            acts = torch.where(self.indices == feature, self.values, 0.0).sum(-1)  # [n, seq]
            top = data.sequence_data.seq_group_data[0]  # "TOP ACTIVATIONS"
            top.seq_data = [s for s in top.seq_data if acts[s.original_index, s.qualifying_token_index] > 0]
            tables = data.feature_tables_data
            keep = [i for i, f in enumerate(tables.correlated_features_indices) if f != feature]
            for column in ("indices", "pearson", "cossim"):
                name = f"correlated_features_{column}"
                setattr(tables, name, [getattr(tables, name)[i] for i in keep])
            top_layers = torch.tensor([int(self.layer_index[s.original_index, s.qualifying_token_index])
                                       for s in top.seq_data], dtype=torch.long)
            active = self.layer_index[acts > 0]
            counts = torch.bincount(active, minlength=self.n_layers)
            sums = torch.zeros(self.n_layers).double().index_add_(0, active, acts[acts > 0].double())
            share = torch.bincount(top_layers, minlength=self.n_layers) / max(len(top_layers), 1)
            stats[feature] = {
                "top_activation_share": [round(x, 4) for x in share.tolist()],
                "mean_activation": [round(x, 4) for x in (sums / counts.clamp_min(1)).tolist()],
                "active_tokens_per_layer": counts.tolist(),
                "n_active_tokens": int(counts.sum()),
                "n_top_activations": len(top_layers),
            }
        return stats


@torch.no_grad()
def scan_tokens(sae: Any, model: Any, tokens: torch.Tensor, batch_size: int = 16) -> TokenScan:
    """Route every token once; keep its `sae.cfg.k` largest latents (a TopK RouteSAE has no more nonzero)."""
    hooks, k = list(sae.cfg.hook_names), int(sae.cfg.k)
    check_hooks_in_model(model, hooks)
    parts = []
    for batch in tokens.split(batch_size):
        out = sae.forward_routed(routed_activations(model, batch, hooks)[0])
        top = out.feature_acts.float().topk(k, dim=-1)
        parts.append((top.values.cpu(), top.indices.cpu(), out.layer_index.cpu()))
    values, indices, layers = (torch.cat(part) for part in zip(*parts, strict=True))
    return TokenScan(values, indices, layers, sae.cfg.d_sae, len(hooks))
