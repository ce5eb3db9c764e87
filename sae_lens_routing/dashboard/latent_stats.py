"""One routed pass over the dashboard tokens: which latents fire, in what order to show them, and where the
shown examples were routed from.

Each token is routed once (`routed_activations` + `forward_routed`) and kept sparse (its top-k latents and its
routed layer); latent selection, the dead-latent list and the routing panel are all read off that one scan, and
the panel's top examples are the (row, pos) pairs sae-dashboard itself chose for the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sae_lens_routing.saes.routed_activations import check_hooks_in_model, routed_activations

# sae-dashboard's feature-centric layout: 5 tokens of context each side of a top example, plus one before for the
# loss effect; its top examples come only from positions [CONTEXT_BEFORE, seq_len - CONTEXT_AFTER)
CONTEXT_BEFORE, CONTEXT_AFTER = 6, 5
TOP_GROUP_TITLE = "TOP ACTIVATIONS"


@dataclass
class TokenScan:
    """Every token's top-k latents (values, indices: [n, seq, k]) and routed layer ([n, seq])."""

    values: torch.Tensor
    indices: torch.Tensor
    layer_index: torch.Tensor
    d_sae: int
    n_layers: int

    def rank(self, candidates: list[int], limit: int | None, full: int) -> tuple[list[int], list[int]]:
        """(live candidates, those with at least `full` activating examples first, then largest max activation
        (ties: firing more often), at most `limit`; dead ones).

        Counted only where sae-dashboard can show a top example. Latents that fill the page's `full` top rows come
        first: ordered by peak alone, the page opened on spiky latents active on a handful of tokens. Within
        them the largest peak rather than the highest firing rate: on the demo SAE the most frequent latents are
        dense ones (firing on 10-100% of tokens) that say little, the strongest peaks are mostly specific ones."""
        span = slice(CONTEXT_BEFORE, self.values.shape[1] - CONTEXT_AFTER)
        values, indices = self.values[:, span].reshape(-1), self.indices[:, span].reshape(-1)
        values, indices = values[values > 0], indices[values > 0]
        counts = torch.bincount(indices, minlength=self.d_sae).tolist()
        maxima = torch.zeros(self.d_sae).scatter_reduce_(0, indices, values, "amax").tolist()
        order = sorted(candidates, key=lambda f: (counts[f] < full, -maxima[f], -counts[f], f))
        return [f for f in order if counts[f]][:limit], sorted(f for f in candidates if not counts[f])

    def activations(self, feature: int) -> torch.Tensor:
        """[n, seq] activation of one latent on every token (0 where it is not among the token's top k)."""
        return torch.where(self.indices == feature, self.values, 0.0).sum(-1)

    def tidy(self, vis_data: Any, features: list[int]) -> None:
        """Drop what sae-dashboard shows that is not data: top-activation rows of a latent active on fewer
        tokens than the rows it fills (their activation is 0), and the latent itself among its correlated
        features (sae-dashboard correlates the features of a batch with themselves included)."""
        for feature in features:
            data = vis_data.feature_data_dict[feature]
            acts, top = self.activations(feature), _top_group(data)
            top.seq_data = [s for s in top.seq_data if acts[s.original_index, s.qualifying_token_index] > 0]
            tables = data.feature_tables_data
            keep = [i for i, f in enumerate(tables.correlated_features_indices) if f != feature]
            for column in ("indices", "pearson", "cossim"):
                name = f"correlated_features_{column}"
                setattr(tables, name, [getattr(tables, name)[i] for i in keep])

    def routing_stats(self, vis_data: Any, features: list[int]) -> dict[int, dict[str, Any]]:
        """Per feature: the share of the page's top examples (those > 0) routed from each layer, and over every
        token where it is active (> 0) the count and mean activation per routed layer."""
        stats: dict[int, dict[str, Any]] = {}
        for feature in features:
            seqs = _top_group(vis_data.feature_data_dict[feature]).seq_data
            top = torch.tensor([(s.original_index, s.qualifying_token_index) for s in seqs]).reshape(-1, 2)
            acts = self.activations(feature)
            top_layers = self.layer_index[top[:, 0], top[:, 1]][acts[top[:, 0], top[:, 1]] > 0]
            active_layers = self.layer_index[acts > 0]
            counts = torch.bincount(active_layers, minlength=self.n_layers)
            sums = torch.zeros(self.n_layers, dtype=torch.float64).index_add_(
                0, active_layers, acts[acts > 0].double()
            )
            share = torch.bincount(top_layers, minlength=self.n_layers) / max(len(top_layers), 1)
            stats[feature] = {
                "top_activation_share": [round(x, 4) for x in share.tolist()],
                "mean_activation": [round(x, 4) for x in (sums / counts.clamp_min(1)).tolist()],
                "active_tokens_per_layer": counts.tolist(),
                "n_active_tokens": int(counts.sum()),
                "n_top_activations": len(top_layers),
            }
        return stats


def _top_group(feature_data: Any) -> Any:
    groups = feature_data.sequence_data.seq_group_data
    if not groups or not groups[0].title.startswith(TOP_GROUP_TITLE):
        raise ValueError(f"sae-dashboard's first sequence group is not {TOP_GROUP_TITLE!r}; its layout changed")
    return groups[0]


@torch.no_grad()
def scan_tokens(sae: Any, model: Any, tokens: torch.Tensor, batch_size: int = 16) -> TokenScan:
    """Route every token once; keep its `sae.cfg.k` largest latents (a TopK RouteSAE has no more nonzero)."""
    hooks, k = list(sae.cfg.hook_names), int(sae.cfg.k)
    check_hooks_in_model(model, hooks)
    parts = []
    for batch in tokens.split(batch_size):
        out = sae.forward_routed(routed_activations(model, batch, hooks)[0])
        acts = out.feature_acts.float()
        if int((acts != 0).sum(-1).max()) > k:
            raise ValueError(
                f"sae has more than sae.cfg.k={k} nonzero latents on a token; dashboards need TopK"
            )
        top = acts.topk(k, dim=-1)
        parts.append((top.values.cpu(), top.indices.cpu(), out.layer_index.cpu()))
    values, indices, layers = (torch.cat(part) for part in zip(*parts))
    return TokenScan(values, indices, layers, sae.cfg.d_sae, len(hooks))
