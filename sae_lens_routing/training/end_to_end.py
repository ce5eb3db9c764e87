"""An end-to-end phase (KL of the spliced model + main loss): alone, the router picks the easiest layer."""

from collections.abc import Iterable
from typing import Any

import torch

from sae_lens_routing.analysis.evals import kl_per_token
from sae_lens_routing.analysis.splice import SplicePlan, routed_splice
from sae_lens_routing.saes.route_sae import normalized_mse
from sae_lens_routing.saes.routed_activations import is_bridge, routed_activations, routed_block_range


def finetune_end_to_end(sae: Any, model: Any, token_batches: Iterable[torch.Tensor], *, lr: float,
                        mse_coefficient: float = 1.0, exclude_special_tokens: Any = None,
                        log_every: int = 0) -> list[dict[str, float]]:
    """Adam over the SAE, one step per batch, lr decaying to 0, the model frozen; returns KL and NormMSE."""
    batches = list(token_batches)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / max(len(batches), 1))
    excluded = torch.as_tensor([] if exclude_special_tokens is None else exclude_special_tokens).long()
    history: list[dict[str, float]] = []
    hooks = list(sae.cfg.hook_names)
    first = routed_block_range(hooks)[0]  # type: ignore[index]
    entry, bridge = f"blocks.{first}.hook_resid_pre", is_bridge(model)  # a bridge cannot start mid-model
    sae.train()
    try:
        for step, tokens in enumerate(batches):
            keep = ~torch.isin(tokens, excluded.to(tokens.device))
            acts, clean_logits, extras = routed_activations(model, tokens, hooks, full_forward=True,
                                                            extra_hooks=() if bridge else (entry,))
            out = sae.forward_routed(acts.to(sae.dtype))
            plan = SplicePlan(out.layer_index, out.routed_layer_reconstruction(), out.feature_acts)
            with routed_splice(model, sae, positions=keep, plan=plan):
                logits = model(tokens) if bridge else model(extras[entry], start_at_layer=first,
                                                             tokens=tokens)
            kl = kl_per_token(clean_logits, logits)[keep].mean()  # KL(clean || spliced) over kept tokens
            mse = normalized_mse(out.sae_out[keep], out.sae_in[keep])
            optimizer.zero_grad(set_to_none=True)
            (kl + mse_coefficient * mse).backward()
            optimizer.step()
            schedule.step()
            history.append({"kl": float(kl.detach()), "normalized_mse": float(mse.detach())})
            if log_every and (step + 1) % log_every == 0:
                print(f"  e2e step {step + 1}/{len(batches)}: {history[-1]}", flush=True)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return history
