"""A RouteSAE read as one hook point: `blocks.N.hook_resid_routed` carries the L routed layers stacked.

Tools that read one hook (sae-dashboard, SAELens's stock training runner) see the routed input there;
`RouteSAE.encode` routes that stack, so they see exactly the features of `forward_routed`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformer_lens.hook_points import HookPoint

from sae_lens_routing.saes.config import hook_layer

PSEUDO_HOOK = "hook_resid_routed"


@contextmanager
def routed_hook_point(model: Any, sae: Any) -> Iterator[str]:
    """Temporarily add `blocks.N.hook_resid_routed`, whose value is the routed layers stacked [b, p, L*d_in]."""
    hooks = list(sae.cfg.hook_names)
    layers = [hook_layer(h) for h in hooks]
    if any(layer is None for layer in layers):
        raise ValueError(f"dashboards need routed hooks inside transformer blocks, got {hooks}")
    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        raise ValueError(f"sae.cfg.hook_names {missing} are not hook points of the model")
    block_index = max(layers)  # type: ignore[type-var]
    block = model.blocks[block_index]
    if hasattr(block, PSEUDO_HOOK):
        raise ValueError(f"blocks.{block_index} already has a {PSEUDO_HOOK} (nested routed_hook_point?)")
    block.add_module(PSEUDO_HOOK, HookPoint())
    model.setup()  # registers the new hook point in model.hook_dict under its module name
    name = f"blocks.{block_index}.{PSEUDO_HOOK}"
    collected: dict[int, torch.Tensor] = {}
    pseudo: HookPoint = getattr(block, PSEUDO_HOOK)

    def collect(i: int) -> Any:
        def hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            collected[i] = output
            if len(collected) == len(hooks):
                pseudo(torch.cat([collected[j] for j in range(len(hooks))], dim=-1))
                collected.clear()

        return hook

    handles = [model.hook_dict[h].register_forward_hook(collect(i)) for i, h in enumerate(hooks)]
    try:
        yield name
    finally:
        for handle in handles:
            handle.remove()
        delattr(block, PSEUDO_HOOK)
        model.setup()
