"""A streaming accumulator (sums: ranks add up) of RouteSAE metrics, named as SAELens's `run_evals` does."""

from typing import Any

import torch
import torch.distributed as dist

from sae_lens_routing.saes.router import routing_entropy_bits

SHARE_PREFIX = "routing/share/"


class RoutedMetrics:
    """Feed `RoutedOutput`s with `update`, read SAELens-named metrics with `compute`."""

    def __init__(self, hook_names: list[str], d_sae: int, d_in: int):
        self.hook_names, self.d_in = list(hook_names), d_in
        # [tokens, sq err, normalised sq err, l0], fired per latent, share, sums of sae_in and of its square
        self.sizes = [4, d_sae, len(self.hook_names), d_in, d_in]
        self.state = torch.zeros(sum(self.sizes), dtype=torch.float64)

    @torch.no_grad()
    def update(self, out: Any, keep: torch.Tensor | None = None) -> None:
        """Add the tokens of one `RoutedOutput`; `keep` (bool, its batch shape) selects tokens."""
        parts = (out.sae_in, out.sae_out, out.feature_acts != 0, out.layer_weights)
        sae_in, sae_out, active, share = (
            (t if keep is None else t[keep]).reshape(-1, t.shape[-1]).double() for t in parts
        )
        sq = (sae_out - sae_in).pow(2).sum(-1)
        scalars = [sq.new_tensor(len(sq)), sq.sum(), (sq / sae_in.pow(2).sum(-1).clamp_min(1e-12)).sum()]
        sums = [active.sum(0), share.sum(0), sae_in.sum(0), sae_in.pow(2).sum(0)]
        self.state += torch.cat([torch.stack([*scalars, active.sum()]), *sums]).cpu()

    def all_reduce(self) -> None:
        """Sum the state over torchrun ranks (when a process group is running), so `compute` is global."""
        if dist.is_available() and dist.is_initialized():
            packed = self.state.cuda() if dist.get_backend() == "nccl" else self.state.clone()
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
            self.state = packed.cpu()

    def compute(self) -> dict[str, Any]:
        scalars, fired, share, sum_in, sum_in_sq = self.state.split(self.sizes)
        n, sq_err, nmse, l0 = scalars.tolist()
        total_var = max((sum_in_sq - sum_in.pow(2) / n).sum().item(), 1e-12)
        freq = fired / n
        metrics: dict[str, Any] = {
            "reconstruction_quality/normalized_mse": nmse / n,
            "reconstruction_quality/explained_variance": 1 - sq_err / total_var,
            "reconstruction_quality/fvu": sq_err / total_var,
            "reconstruction_quality/mse": sq_err / (n * self.d_in),
            "sparsity/l0": l0 / n,
            "sparsity/latents_silent_on_eval": int((freq == 0).sum()),
            "sparsity/dense_latents": int((freq > 0.1).sum()),  # firing on more than 10% of tokens
            "metrics/total_tokens_evaluated": int(n),
            **{SHARE_PREFIX + h: v for h, v in zip(self.hook_names, (share / n).tolist(), strict=True)},
            "routing/entropy_bits": routing_entropy_bits(share),
        }
        return metrics


def routing_shares(metrics: dict[str, Any]) -> dict[str, float]:
    """{hook name: share of tokens} from metrics named as `RoutedMetrics.compute` names them."""
    return {k[len(SHARE_PREFIX) :]: v for k, v in metrics.items() if k.startswith(SHARE_PREFIX)}
