"""Tokens -> the L routed layers of each token stacked, [batch, pos, L, d_in]: the one model-side primitive
every routed path shares (one hook check, one stop rule, one stacking order)."""

from __future__ import annotations

from typing import Any

import torch
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name as stop_at_layer


def check_hooks_in_model(
    model: Any, hook_names: list[str], field: str = "sae.cfg.hook_names", in_blocks: bool = False
) -> None:
    """The one hook check: a ValueError naming `field` when a routed hook is not a hook point of `model`
    (or, with `in_blocks`, not inside a transformer block)."""
    hook_dict = getattr(model, "hook_dict", None) or {}
    if missing := [h for h in hook_names if h not in hook_dict or in_blocks and stop_at_layer(h) is None]:
        sample = [h for h in hook_dict if h.endswith("hook_resid_post")][:3] or list(hook_dict)[:3]
        where = " inside its transformer blocks" if in_blocks else ""
        raise ValueError(f"{field} {missing} are not hook points of the model{where} (e.g. {sample})")


def is_bridge(model: Any) -> bool:
    """A TransformerLens 3 `TransformerBridge`, which cannot start a forward mid-stream (`start_at_layer`)."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # transformer-lens 2.x
        return False
    return isinstance(model, TransformerBridge)


def routed_block_range(hook_names: list[str]) -> tuple[int, int] | None:
    """(first routed block, block after the last), where a splice's forward may start and stop; None if a
    hook is outside the blocks."""
    stops = [stop_at_layer(h) for h in hook_names]
    return None if None in stops else (min(stops) - 1, max(stops))  # type: ignore[type-var,operator]


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
    """(stacked routed activations, logits or None, the `extra_hooks` activations from the same pass).
    Stops after the last routed block unless `full_forward`, which also returns the logits."""
    stop = None if full_forward else (routed_block_range(hook_names) or (None, None))[1]
    names = [*hook_names, *extra_hooks]
    logits, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=stop, **forward_kwargs)
    stacked = torch.stack([cache[h] for h in hook_names], dim=-2)
    return stacked, (logits if stop is None else None), {h: cache[h] for h in extra_hooks}
