"""Tokens -> the L routed layers of each token, stacked: the one model-side primitive every routed path shares.

Training stores, evals, the splice, feature contexts, the dashboard and the benchmarks all need the same thing
from the model: the residual stream at the routed hooks, [batch, pos, L, d_in] in the hooks' order, from a
forward that stops after the last routed block (nothing later can change a routing decision). Keeping it in one
place keeps one hook check, one stop rule and one stacking order.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_lens_routing.saes.config import hook_layer


def check_hooks_in_model(model: Any, hook_names: list[str], field: str = "sae.cfg.hook_names") -> None:
    """Raise a ValueError naming `field` when a routed hook is not a hook point of `model`."""
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        raise ValueError(f"the model has no hook points (hook_dict); {field} need a TransformerLens model")
    missing = [h for h in hook_names if h not in hook_dict]
    if missing:
        sample = [h for h in hook_dict if h.endswith("hook_resid_post")][:3] or list(hook_dict)[:3]
        raise ValueError(f"{field} {missing} are not hook points of the model (e.g. {sample})")


def is_bridge(model: Any) -> bool:
    """A TransformerLens 3 `TransformerBridge`: it runs Hugging Face's own forward, so it cannot start a forward
    from the residual stream (`start_at_layer`); everything else routed works as on a `HookedTransformer`."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # transformer-lens 2.x
        return False
    return isinstance(model, TransformerBridge)


def routed_block_range(hook_names: list[str]) -> tuple[int, int] | None:
    """(first routed block, block after the last routed block), or None if a hook is outside `blocks.N`.

    A forward may start at the first (everything before it is untouched by a splice) and stop at the second."""
    layers = [hook_layer(h) for h in hook_names]
    if any(layer is None for layer in layers):
        return None
    return min(layers), max(layers) + 1  # type: ignore[type-var,operator]


def stack_routed(cache: Any, hook_names: list[str]) -> torch.Tensor:
    """[..., L, d_in] from a cache (or dict) keyed by hook name, in `hook_names` order."""
    return torch.stack([cache[h] for h in hook_names], dim=-2)


@torch.no_grad()
def routed_activations(
    model: Any,
    tokens: torch.Tensor,
    hook_names: list[str],
    *,
    extra_hooks: tuple[str, ...] = (),
    full_forward: bool = False,
    **forward_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """(stacked routed activations [batch, pos, L, d_in], logits or None, the `extra_hooks` activations).

    Stops after the last routed block unless `full_forward` (which returns the logits too, e.g. the clean pass
    of an evaluation). `extra_hooks` are cached on the same pass (e.g. the stream entering the first routed
    block, from which a spliced forward can start)."""
    block_range = routed_block_range(hook_names)
    stop = None if full_forward or block_range is None else block_range[1]
    names = [*hook_names, *extra_hooks]
    logits, cache = model.run_with_cache(
        tokens, names_filter=names, stop_at_layer=stop, **forward_kwargs
    )
    extras = {h: cache[h] for h in extra_hooks}
    return stack_routed(cache, hook_names), (logits if stop is None else None), extras
