"""One routed pass over the dashboard tokens: which latents fire, in what order to show them, and where the
shown examples were routed from.

Each token is routed once (`routed_activations` + `forward_routed`) and kept sparse (its top-k latents and its
routed layer); latent selection, the dead-latent list and the routing panel are all read off that one scan, and
the routing panel's top examples are the (row, pos) pairs sae-dashboard itself chose for the page.
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

    def firing(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per latent: (number of tokens where it is active (> 0), its max activation) over the positions
        sae-dashboard can show as a top example."""
        span = slice(CONTEXT_BEFORE, self.values.shape[1] - CONTEXT_AFTER)
        values, indices = self.values[:, span].reshape(-1), self.indices[:, span].reshape(-1)
        active = values > 0
        counts = torch.bincount(indices[active], minlength=self.d_sae)
        maxima = torch.zeros(self.d_sae).scatter_reduce_(0, indices[active], values[active], "amax")
        return counts, maxima

    def rank(self, candidates: list[int], limit: int | None) -> tuple[list[int], list[int]]:
        """(live candidates, most often firing first (ties: larger max), at most `limit`; dead candidates): a
        latent is live if it fired on a position the page can show, so every page has real top examples."""
        counts, maxima = self.firing()
        order = sorted(candidates, key=lambda f: (-int(counts[f]), -float(maxima[f]), f))
        live = [f for f in order if counts[f] > 0]
        return live[:limit], sorted(f for f in candidates if counts[f] == 0)

    def routing_stats(self, vis_data: Any, features: list[int]) -> dict[int, dict[str, Any]]:
        """Per feature: the share of the page's top examples (those > 0) routed from each layer, and over every
        token where it is active (> 0) the count and mean activation per routed layer."""
        L = self.n_layers
        layers = self.layer_index[..., None].expand_as(self.indices)
        active = self.values > 0
        where = (layers[active], self.indices[active])
        counts = torch.zeros(L, self.d_sae, dtype=torch.float64).index_put_(
            where, torch.ones(len(where[0]), dtype=torch.float64), accumulate=True
        )
        sums = torch.zeros(L, self.d_sae, dtype=torch.float64).index_put_(
            where, self.values[active].double(), accumulate=True
        )
        means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))
        stats: dict[int, dict[str, Any]] = {}
        for feature in features:
            rows, pos = top_positions(vis_data, feature).unbind(-1)
            shown = ((self.indices[rows, pos] == feature) & (self.values[rows, pos] > 0)).any(-1)
            top_layers = self.layer_index[rows, pos][shown]
            top_share = torch.bincount(top_layers, minlength=L).double() / max(len(top_layers), 1)
            stats[feature] = {
                "top_share": [round(x, 4) for x in top_share.tolist()],
                "mean_activation": [round(x, 4) for x in means[:, feature].tolist()],
                "active_tokens_per_layer": [int(c) for c in counts[:, feature].tolist()],
                "n_active": int(counts[:, feature].sum()),
                "n_top": int(len(top_layers)),
            }
        return stats


@torch.no_grad()
def scan_tokens(sae: Any, model: Any, tokens: torch.Tensor, batch_size: int = 16) -> TokenScan:
    """Route every token once; keep its `sae.cfg.k` largest latents (a TopK RouteSAE has no more nonzero)."""
    hooks = list(sae.cfg.hook_names)
    check_hooks_in_model(model, hooks)
    k = int(sae.cfg.k)
    values, indices, layers = [], [], []
    for batch in tokens.split(batch_size):
        out = sae.forward_routed(routed_activations(model, batch, hooks)[0])
        acts = out.feature_acts.float()
        if int((acts != 0).sum(-1).max()) > k:
            raise ValueError(
                f"sae has more than sae.cfg.k={k} nonzero latents on a token; dashboards need TopK"
            )
        top = acts.topk(k, dim=-1)
        values.append(top.values.cpu())
        indices.append(top.indices.cpu())
        layers.append(out.layer_index.cpu())
    return TokenScan(torch.cat(values), torch.cat(indices), torch.cat(layers), sae.cfg.d_sae, len(hooks))


def top_positions(vis_data: Any, feature: int) -> torch.Tensor:
    """[(row, position)] of the examples in sae-dashboard's top-activations group of `feature`, as the page shows
    them."""
    groups = vis_data.feature_data_dict[feature].sequence_data.seq_group_data
    if not groups or not groups[0].title.startswith(TOP_GROUP_TITLE):
        raise ValueError(
            f"sae-dashboard's first sequence group is not {TOP_GROUP_TITLE!r}; its layout changed"
        )
    rows = [(seq.original_index, seq.qualifying_token_index) for seq in groups[0].seq_data]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)
