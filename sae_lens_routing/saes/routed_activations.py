"""The model side of every routed path: hook check, stop rule, stacking [batch, pos, L, d_in], pseudo hook."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name as stop_at_layer
from transformer_lens.hook_points import HookPoint


def check_hooks_in_model(
    model: Any, hook_names: list[str], field: str = "sae.cfg.hook_names", in_blocks: bool = False
) -> None:
    """The one hook check: routed hooks must be hook points of `model` (inside blocks with `in_blocks`)."""
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
    """(first routed block, block after the last): where a forward may start and stop; None outside blocks."""
    stops = [stop_at_layer(h) for h in hook_names]
    return None if None in stops else (min(stops) - 1, max(stops))  # type: ignore[type-var,operator]


@torch.no_grad()
def routed_activations(
    model: Any, tokens: torch.Tensor, hook_names: list[str], *, extra_hooks: tuple[str, ...] = (),
    full_forward: bool = False, **forward_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:  # fmt: skip
    """(stacked routed activations, logits if `full_forward` else None, the `extra_hooks` activations)."""
    stop = None if full_forward else (routed_block_range(hook_names) or (None, None))[1]
    names = [*hook_names, *extra_hooks]
    logits, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=stop, **forward_kwargs)
    stacked = torch.stack([cache[h] for h in hook_names], dim=-2)
    return stacked, (logits if stop is None else None), {h: cache[h] for h in extra_hooks}


PSEUDO_HOOK = "hook_resid_routed"


@contextmanager
def routed_hook_point(model: Any, sae: Any) -> Iterator[str]:
    """Temporarily add `blocks.N.hook_resid_routed`: the routed layers stacked, [b, p, L*d_in]."""
    hooks = list(sae.cfg.hook_names)
    check_hooks_in_model(model, hooks, in_blocks=True)
    block_index = routed_block_range(hooks)[1] - 1  # type: ignore[index]
    block = model.blocks[block_index]
    block.add_module(PSEUDO_HOOK, pseudo := HookPoint())
    model.setup()
    collected: dict[int, torch.Tensor] = {}

    def collect(i: int, module: Any, inputs: Any, output: torch.Tensor) -> None:
        collected[i] = output
        if len(collected) == len(hooks):
            pseudo(torch.cat([collected[j] for j in range(len(hooks))], dim=-1))
            collected.clear()

    handles = [model.hook_dict[h].register_forward_hook(partial(collect, i)) for i, h in enumerate(hooks)]
    try:
        yield f"blocks.{block_index}.{PSEUDO_HOOK}"
    finally:
        for handle in handles:
            handle.remove()
        delattr(block, PSEUDO_HOOK)
        model.setup()
