"""`run_route_evals`: reconstruction and the routed splice's effect, under SAELens's `run_evals` names."""

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import mean
from typing import Any

import torch

from sae_lens_routing.analysis.feature_contexts import ContextRules, FeatureContextCollector
from sae_lens_routing.analysis.splice import check_spliceable, plan_from_routed, routed_splice
from sae_lens_routing.atomic import atomic_write_bytes
from sae_lens_routing.saes.route_sae import RoutedOutput
from sae_lens_routing.saes.routed_activations import is_bridge, routed_activations, routed_block_range
from sae_lens_routing.saes.routed_metrics import RoutedMetrics, routing_shares


def _token_batches(source: Any, n_batches: int, batch_size: int | None, d_vocab: int) -> list[torch.Tensor]:
    """Batches of a [n, seq] token tensor (checked once here), or `n_batches` from an ActivationsStore."""
    if not isinstance(source, torch.Tensor):
        return [source.get_batch_tokens(batch_size) for _ in range(n_batches)]
    floating = source.is_floating_point() or source.dtype == torch.bool
    if floating or (len(source) and not 0 <= int(source.min()) <= int(source.max()) < d_vocab):
        raise ValueError(
            f"tokens must be integer token ids, got dtype {source.dtype}"
            if floating
            else f"tokens must be ids in [0, d_vocab={d_vocab}) of the model, got ids "
            f"{int(source.min())}..{int(source.max())}; tokenize with this model's tokenizer"
        )
    return list(source.split(batch_size or len(source)))


@torch.no_grad()
def run_route_evals(
    sae: Any, model: Any, tokens_or_store: Any, *, n_batches: int = 4, batch_size: int | None = None,
    exclude_special_tokens: list[int] | torch.Tensor | None = None,
    on_routed: Callable[[torch.Tensor, RoutedOutput], None] | None = None,
    features: FeatureContextCollector | None = None,
) -> dict[str, Any]:  # fmt: skip
    """All metrics from one clean forward and one routing per batch; special tokens unspliced, uncounted."""
    hooks = list(sae.cfg.hook_names)
    check_spliceable(model, sae)
    given = exclude_special_tokens
    given = getattr(tokens_or_store, "exclude_special_tokens", None) if given is None else given
    excluded = torch.as_tensor([] if given is None else given, dtype=torch.long).cpu()
    features = features or FeatureContextCollector(model, sae, ContextRules(), excluded.tolist())
    recon, downstream = RoutedMetrics(hooks, sae.cfg.d_sae, sae.cfg.d_in), DownstreamMetrics()
    # resume at the first routed block, except for a bridge or left padding (would lose the attention mask)
    blocks = routed_block_range(hooks)
    left_padded = getattr(getattr(model, "tokenizer", None), "padding_side", "right") == "left"
    first = 0 if is_bridge(model) or left_padded or blocks is None else blocks[0]
    entry, resumed = f"blocks.{first}.hook_resid_pre", not is_bridge(model)
    for tokens in _token_batches(tokens_or_store, n_batches, batch_size, model.cfg.d_vocab):
        keep = ~torch.isin(tokens, excluded.to(tokens.device))
        acts, clean, extra = routed_activations(model, tokens, hooks, full_forward=True, extra_hooks=(entry,))
        out = sae.forward_routed(acts)
        recon.update(out, keep)
        if on_routed is not None:
            on_routed(tokens, out)
        features(tokens, out)
        spliced = []
        for replacement, positions in (("sae", keep), ("zero", None)):  # the ablation zeroes every position
            plan = plan_from_routed(sae, out, replacement=replacement)
            with routed_splice(model, sae, positions=positions, plan=plan):
                x = model(extra[entry], start_at_layer=first, tokens=tokens) if resumed else model(tokens)
            spliced.append(x)
        downstream.update(tokens, keep, clean, *spliced)
    return {**recon.compute(), **downstream.compute(), **features.metrics()}


class DownstreamMetrics:
    """Streaming CE/KL of the clean, spliced and zero-ablated forwards; KL also in the official batchmean."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(["ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero", "n_ce", "n"], 0.0)
        self.official: dict[str, list[float]] = {"sae": [], "zero": []}

    def update(self, tokens: torch.Tensor, keep: torch.Tensor, *logits: torch.Tensor) -> None:
        target_keep = keep[:, :-1] & keep[:, 1:]  # predict a real token from a real token
        for name, x in zip(("clean", "sae", "zero"), logits, strict=True):
            self.totals[f"ce_{name}"] += next_token_ce(x, tokens)[target_keep].sum().item()
            if name != "clean":
                kl = kl_per_token(logits[0], x)
                self.totals[f"kl_{name}"] += kl[keep].sum().item()
                self.official[name].append(kl.sum().item() / len(tokens))
        self.totals["n_ce"] += target_keep.sum().item()
        self.totals["n"] += keep.sum().item()

    def compute(self) -> dict[str, Any]:
        t = self.totals
        ce_clean, ce_sae, ce_zero = (t[f"ce_{k}"] / t["n_ce"] for k in ("clean", "sae", "zero"))
        perf, behavior = "model_performance_preservation/", "model_behavior_preservation/"
        score = None if ce_zero == ce_clean else (ce_zero - ce_sae) / (ce_zero - ce_clean)
        return {
            perf + "ce_loss_without_sae": ce_clean,
            perf + "ce_loss_with_sae": ce_sae,
            perf + "ce_loss_with_ablation": ce_zero,
            perf + "ce_loss_score": score,
            perf + "delta_ce": ce_sae - ce_clean,
            behavior + "kl_div_with_sae": t["kl_sae"] / t["n"],
            behavior + "kl_div_with_ablation": t["kl_zero"] / t["n"],
            behavior + "kl_div_score": 1 - t["kl_sae"] / max(t["kl_zero"], 1e-12),
            behavior + "kl_div_with_sae_official_batchmean": mean(self.official["sae"]),
            behavior + "kl_div_with_ablation_official_batchmean": mean(self.official["zero"]),
        }


def next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position next-token cross-entropy [batch, seq-1]."""
    return -logits.float().log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)


def kl_per_token(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(clean || other) at each position [batch, seq]."""
    logp, logq = clean.float().log_softmax(-1), other.float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def kl_official_batchmean(clean: torch.Tensor, other: torch.Tensor) -> float:
    """The official code's unit, `F.kl_div(..., reduction="batchmean")` over [batch, seq, vocab]."""
    return kl_per_token(clean, other).sum().item() / len(clean)


def write_routing_chart(metrics: dict[str, Any], path: str | Path) -> Path:
    shares = routing_shares(metrics)
    return render_routing_share_chart(list(shares.values()), list(shares), path)


def render_routing_share_chart(shares: Sequence[float], hook_names: Sequence[str], path: str | Path) -> Path:
    """A bar chart of the share of tokens routed to each layer, written atomically as PNG."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global figure state
    labels = [h.removesuffix(".hook_resid_post").removeprefix("blocks.") for h in hook_names]
    fig = Figure(figsize=(max(4.0, 0.45 * len(labels) + 1.5), 3.0), dpi=100)
    ax = fig.subplots()
    ax.bar(range(len(shares)), [100 * s for s in shares], color="#4C72B0")
    ax.set_xticks(range(len(labels)), labels, rotation=0 if len(labels) <= 12 else 60)
    ax.set(xlabel="routed layer (block)", ylabel="% of tokens", title="Routing share per layer")
    fig.tight_layout()
    fig.savefig(buf := io.BytesIO(), format="png")
    return atomic_write_bytes(path, buf.getvalue())
