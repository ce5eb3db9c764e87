"""A short end-to-end phase: train the SAE (router included) through the routed splice on the model's KL.

The main phase minimises the normalised MSE of the *routed input*, which the router can lower by sending tokens to
whichever layer is easiest to reconstruct, whatever that costs the model downstream. Here each token's
reconstruction replaces its routed layer inside the model, and the loss is KL(clean || spliced) over next-token
distributions plus the main loss (so the SAE keeps reconstructing while it learns what the model needs). The
model's weights stay frozen; the gradient reaches the SAE and the router through the blocks after the splice.
This is the "short end-to-end fine-tune" of e2e SAEs (Braun et al. 2024), applied to routed SAEs.

The splice here is the training-time form of `analysis.splice.routed_splice` with a plan: the same replacement
(`RoutedOutput.routed_layer_reconstruction`, special tokens left clean), kept in the autograd graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sae_lens_routing.saes.route_sae import normalized_mse
from sae_lens_routing.saes.routed_activations import routed_activations, routed_block_range


def end_to_end_step(
    sae: Any, model: Any, tokens: torch.Tensor, keep: torch.Tensor, mse_coefficient: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, logged values) of one batch: KL of the routed-spliced model against the clean one, per kept token,
    plus `mse_coefficient` x the normalised MSE of the routed input."""
    hooks = list(sae.cfg.hook_names)
    first = routed_block_range(hooks)[0]  # type: ignore[index]
    entry = f"blocks.{first}.hook_resid_pre"
    acts, clean_logits, extras = routed_activations(model, tokens, hooks, full_forward=True, extra_hooks=(entry,))
    out = sae.forward_routed(acts.to(sae.dtype))
    values = out.routed_layer_reconstruction()

    def replace(layer: int) -> Any:
        def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            mask = (out.layer_index == layer) & keep
            return torch.where(mask[..., None], values.to(act.dtype), act)

        return hook_fn

    with model.hooks(fwd_hooks=[(h, replace(i)) for i, h in enumerate(hooks)]):
        logits = model(extras[entry], start_at_layer=first, tokens=tokens)
    logp_clean = clean_logits.float().log_softmax(-1)
    kl = (logp_clean.exp() * (logp_clean - logits.float().log_softmax(-1))).sum(-1)[keep].mean()
    mse = normalized_mse(out.sae_out[keep], out.sae_in[keep])
    return kl + mse_coefficient * mse, {"kl": float(kl.detach()), "normalized_mse": float(mse.detach())}


def finetune_end_to_end(
    sae: Any,
    model: Any,
    token_batches: Iterable[torch.Tensor],
    *,
    lr: float,
    mse_coefficient: float = 1.0,
    exclude_special_tokens: list[int] | None = None,
    log_every: int = 0,
) -> list[dict[str, float]]:
    """Adam over the SAE's parameters, one step per batch of `token_batches` [batch, seq], the learning rate
    decaying linearly to 0; the model is frozen (its `requires_grad` flags restored after). Returns each step's
    KL and NormMSE."""
    batches = list(token_batches)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / max(len(batches), 1))
    excluded = torch.tensor(exclude_special_tokens or [], dtype=torch.long)
    history: list[dict[str, float]] = []
    sae.train()
    try:
        for step, tokens in enumerate(batches):
            keep = ~torch.isin(tokens, excluded.to(tokens.device))
            loss, logged = end_to_end_step(sae, model, tokens, keep, mse_coefficient)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(logged)
            if log_every and (step + 1) % log_every == 0:
                print(f"  e2e step {step + 1}/{len(batches)}: {logged}", flush=True)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return history
