"""One streaming accumulator of a RouteSAE's reconstruction, sparsity and routing metrics, named as SAELens's
`run_evals` names them; it keeps sums, so any number of batches fits and torchrun ranks add up."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from sae_lens_routing.saes.router import routing_entropy_bits

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens counts as dense
SHARE_PREFIX = "routing/share/"


class RoutedMetrics:
    """Feed `RoutedOutput`s with `update`, read SAELens-named metrics with `compute`."""

    def __init__(self, hook_names: list[str], d_sae: int, d_in: int):
        self.hook_names = list(hook_names)
        self.d_in = d_in
        n_layers = len(self.hook_names)
        # scalars: [n tokens, sum sq err, sum normalised sq err, sum l0]
        self.scalars = torch.zeros(4, dtype=torch.float64)
        self.fired = torch.zeros(d_sae, dtype=torch.float64)
        self.share = torch.zeros(n_layers, dtype=torch.float64)
        self.sum_in = torch.zeros(d_in, dtype=torch.float64)
        self.sum_in_sq = torch.zeros(d_in, dtype=torch.float64)

    @torch.no_grad()
    def update(self, out: Any, keep: torch.Tensor | None = None) -> None:
        """Add the tokens of one routed output (`RoutedOutput`); `keep` (bool, its batch shape) selects tokens."""
        sae_in, sae_out, acts, weights = out.sae_in, out.sae_out, out.feature_acts, out.layer_weights
        if keep is not None:
            sae_in, sae_out, acts, weights = sae_in[keep], sae_out[keep], acts[keep], weights[keep]
        sae_in = sae_in.reshape(-1, sae_in.shape[-1]).double()
        sae_out = sae_out.reshape(-1, sae_out.shape[-1]).double()
        acts = acts.reshape(-1, acts.shape[-1])
        sq = (sae_out - sae_in).pow(2).sum(-1)
        active = acts != 0
        self.scalars += torch.stack(
            [
                torch.tensor(float(len(sae_in)), dtype=torch.float64, device=sq.device),
                sq.sum(),
                (sq / sae_in.pow(2).sum(-1).clamp_min(1e-12)).sum(),
                active.sum().double(),
            ]
        ).cpu()
        self.fired += active.double().sum(0).cpu()
        self.share += weights.reshape(-1, weights.shape[-1]).double().sum(0).cpu()
        self.sum_in += sae_in.sum(0).cpu()
        self.sum_in_sq += sae_in.pow(2).sum(0).cpu()

    @property
    def n_tokens(self) -> int:
        return int(self.scalars[0])

    def all_reduce(self) -> None:
        """Sum the state over torchrun ranks (when a process group is running), so `compute` is global."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        packed = torch.cat([self.scalars, self.fired, self.share, self.sum_in, self.sum_in_sq])
        if dist.get_backend() == "nccl":
            packed = packed.cuda()
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        parts = packed.cpu().split([4, len(self.fired), len(self.share), self.d_in, self.d_in])
        self.scalars, self.fired, self.share, self.sum_in, self.sum_in_sq = (p.clone() for p in parts)

    def compute(self) -> dict[str, Any]:
        n, sq_err, nmse, l0 = self.scalars.tolist()
        total_var = (self.sum_in_sq - self.sum_in.pow(2) / n).sum().item()
        freq = self.fired / n
        metrics: dict[str, Any] = {
            "reconstruction_quality/normalized_mse": nmse / n,
            "reconstruction_quality/explained_variance": 1 - sq_err / max(total_var, 1e-12),
            "reconstruction_quality/fvu": sq_err / max(total_var, 1e-12),
            "reconstruction_quality/mse": sq_err / (n * self.d_in),
            "sparsity/l0": l0 / n,
            "sparsity/latents_silent_on_eval": int((freq == 0).sum()),
            "sparsity/dense_latents": int((freq > DENSE_THRESHOLD).sum()),
            "metrics/total_tokens_evaluated": int(n),
        }
        for hook, share in zip(self.hook_names, (self.share / n).tolist()):
            metrics[SHARE_PREFIX + hook] = share
        metrics["routing/entropy_bits"] = routing_entropy_bits(self.share)
        return metrics


def routing_shares(metrics: dict[str, Any]) -> dict[str, float]:
    """{hook name: share of tokens} from metrics named as `RoutedMetrics.compute` names them."""
    return {k[len(SHARE_PREFIX) :]: v for k, v in metrics.items() if k.startswith(SHARE_PREFIX)}
