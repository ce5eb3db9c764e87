"""An end-to-end phase (KL of the spliced model + main loss): alone, the router picks the easiest layer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sae_lens_routing.saes.route_sae import normalized_mse
from sae_lens_routing.saes.routed_activations import routed_activations, routed_block_range


def end_to_end_step(sae: Any, model: Any, tokens: torch.Tensor, keep: torch.Tensor, mse_coefficient: float
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, logged values): KL of spliced vs clean over kept tokens plus `mse_coefficient` x NormMSE."""
    hooks = list(sae.cfg.hook_names)
    first = routed_block_range(hooks)[0]  # type: ignore[index]
    entry = f"blocks.{first}.hook_resid_pre"
    acts, clean_logits, extras = routed_activations(model, tokens, hooks, full_forward=True,
                                                    extra_hooks=(entry,))
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


def finetune_end_to_end(sae: Any, model: Any, token_batches: Iterable[torch.Tensor], *, lr: float,
                        mse_coefficient: float = 1.0, exclude_special_tokens: list[int] | None = None,
                        log_every: int = 0) -> list[dict[str, float]]:
    """Adam over the SAE, one step per batch, lr decaying to 0, the model frozen; returns KL and NormMSE."""
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
